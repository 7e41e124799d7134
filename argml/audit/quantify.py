"""Class shares of a collection, corrected for the classifier's errors, with bootstrap intervals.

Counting the model's labels (classify and count, `cc`) is biased toward the classes the model over-predicts,
and the bias depends on the collection's true make-up. Quantification methods correct it with what the
model's errors looked like on labelled held-out faces (its validation split):

- `cc`   classify and count: the share of each predicted class (the raw shares);
- `pcc`  probabilistic cc: the mean predicted distribution;
- `acc`  adjusted cc (Forman 2008): solve q = M p, M[i, j] = P(predicted i | true j) on validation;
- `pacc` probabilistic acc (Bella et al. 2010): the same with mean probabilities in q and M;
- `em`   EM prior adjustment (Saerens, Latinne & Decaestecker 2002): re-weight every face's distribution by
         p / p_train until the shares are a fixed point; p_train is the mean validation distribution.

acc/pacc clip negative solutions to 0 and renormalise (quapy's `norm="clip"`); a class without validation
faces keeps M[:, j] = e_j. Every estimator takes resampling *weights* ([B, rows]: how often each row is drawn
in each of B replicates), so a whole bootstrap is one batched computation; weights of ones are the point
estimate. Intervals resample both the collection's faces and the validation faces, so they include the
uncertainty of the confusion matrices.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from threadpoolctl import threadpool_limits

METHODS = ("cc", "pcc", "acc", "pacc", "em")
CORRECTING = ("acc", "pacc", "em")  # the methods that use the validation faces
EM_TOLERANCE = 1e-4  # convergence: no share moved more than this in one EM step (quapy's EMQ.EPSILON)
EM_MAX_STEPS = 1000
BOOTSTRAP_VALUES = 4_000_000  # replicates computed at once: at most this many replicate x row floats
MAX_BOOTSTRAP_ROWS = 20_000  # larger collections are resampled at this size: wider (conservative) intervals


@dataclass(frozen=True)
class Answers:
    """A task's answers on some faces: predicted class [N] and probabilities [N, C]; `true` [N] where known."""

    predicted: np.ndarray
    probabilities: np.ndarray
    true: np.ndarray | None = None

    @property
    def classes(self) -> int:
        return self.probabilities.shape[1]

    def __len__(self) -> int:
        return len(self.predicted)

    def take(self, rows: np.ndarray) -> Answers:
        return Answers(self.predicted[rows], self.probabilities[rows], None if self.true is None else self.true[rows])


def _one_hot(labels: np.ndarray, classes: int) -> np.ndarray:
    return np.eye(classes)[np.asarray(labels, dtype=np.int64)]


def _weighted_mean(weights: np.ndarray, values: np.ndarray) -> np.ndarray:
    """[B, rows] weights, [rows, C] values -> [B, C] weighted means."""
    return (weights @ values) / weights.sum(axis=1, keepdims=True)


def _rates(weights: np.ndarray, answered: np.ndarray, true: np.ndarray, classes: int) -> np.ndarray:
    """[B, C, C]: M[b, i, j] = weighted mean of `answered`[:, i] over the validation faces of true class j."""
    truth = _one_hot(true, classes)  # [M, C]
    pairs = (answered[:, :, None] * truth[:, None, :]).reshape(len(truth), classes * classes)  # [M, C*C]
    totals = (weights @ pairs).reshape(len(weights), classes, classes)  # [B, C, C]
    per_class = weights @ truth  # [B, C]
    empty = per_class == 0
    rates = totals / np.where(empty, 1.0, per_class)[:, None, :]
    return np.where(empty[:, None, :], np.eye(classes)[None], rates)  # no validation face of class j: e_j


def _adjust(rates: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """Solve observed = rates @ shares per replicate, then clip to >= 0 and renormalise."""
    shares = np.einsum("bij,bj->bi", np.linalg.pinv(rates), observed)
    shares = np.clip(shares, 0.0, None)
    total = shares.sum(axis=1, keepdims=True)
    return np.where(total > 0, shares / np.where(total > 0, total, 1.0), observed)


def _em_step(shares: np.ndarray, weights: np.ndarray, probabilities: np.ndarray, train_prior: np.ndarray) -> np.ndarray:
    """One EM step for each replicate: re-weight every face's distribution by ratio = shares / train_prior,
    renormalise it and average. As matrix products: face n's new distribution is P[n] * ratio / (P[n] . ratio),
    so the average is ratio * ((weights / (ratio P^T)) P) / sum(weights), without a [B, rows, C] array."""
    ratio = shares / train_prior  # [B, C]
    norms = np.clip(ratio @ probabilities.T, 1e-300, None)  # [B, rows]
    return ratio * ((weights / norms) @ probabilities) / weights.sum(axis=1, keepdims=True)


def _em(weights: np.ndarray, probabilities: np.ndarray, train_prior: np.ndarray) -> np.ndarray:
    """[B, C]: EM's fixed point for each replicate's weighted collection (Saerens et al. 2002), reached with
    SQUAREM's extrapolation (Varadhan & Roland 2008: the same fixed point in a fraction of the plain steps)."""
    floor = 1e-12
    train_prior = np.clip(train_prior, floor, None)

    def step(shares):
        return _em_step(shares, weights, probabilities, train_prior)

    shares = _weighted_mean(weights, probabilities)
    for _ in range(EM_MAX_STEPS):
        first = step(shares)
        second = step(first)
        change, curvature = first - shares, second - 2 * first + shares
        size = np.linalg.norm(curvature, axis=1, keepdims=True)
        alpha = np.minimum(-np.linalg.norm(change, axis=1, keepdims=True) / np.where(size > 0, size, 1), -1.0)
        jumped = np.clip(shares - 2 * alpha * change + alpha ** 2 * curvature, floor, None)
        updated = step(jumped / jumped.sum(axis=1, keepdims=True))
        converged = np.abs(updated - shares).max() < EM_TOLERANCE and np.abs(updated - step(updated)).max() < EM_TOLERANCE
        shares = updated
        if converged:
            break
    return shares


def estimate(method: str, collection: Answers, validation: Answers | None,
             collection_weights: np.ndarray | None = None, validation_weights: np.ndarray | None = None) -> np.ndarray:
    """[B, C] shares by `method` for B weightings of the collection's and the validation's rows ([B, N] and
    [B, M]); without weights, [1, C]: the point estimate."""
    if method not in METHODS:
        raise ValueError(f"unknown quantification method {method!r}; use one of {', '.join(METHODS)}")
    classes = collection.classes
    if collection_weights is None:
        collection_weights = np.ones((1, len(collection)))
    if method in ("cc", "acc"):
        observed = _weighted_mean(collection_weights, _one_hot(collection.predicted, classes))
    else:
        observed = _weighted_mean(collection_weights, collection.probabilities)
    if method in ("cc", "pcc"):
        return observed
    if validation is None or validation.true is None:
        raise ValueError(f"method {method} needs labelled validation faces")
    if validation_weights is None:
        validation_weights = np.ones((len(collection_weights), len(validation)))
    if method == "em":
        train_prior = _weighted_mean(validation_weights, validation.probabilities)
        return _em(collection_weights, collection.probabilities, train_prior)
    answered = _one_hot(validation.predicted, classes) if method == "acc" else validation.probabilities
    return _adjust(_rates(validation_weights, answered, validation.true, classes), observed)


def resampling_weights(rows: int, rounds: int, rng: np.random.Generator, size: int | None = None) -> np.ndarray:
    """[rounds, rows]: how often each row is drawn when `size` rows (default: all) are drawn with replacement."""
    size = rows if size is None else size
    drawn = rng.integers(0, rows, (rounds, size)) + rows * np.arange(rounds)[:, None]
    return np.bincount(drawn.ravel(), minlength=rounds * rows).reshape(rounds, rows).astype(np.float64)


@dataclass(frozen=True)
class Shares:
    """A task's shares by one method: the point estimate [C] and the interval bounds [C] of each class."""

    method: str
    point: np.ndarray
    low: np.ndarray
    high: np.ndarray

    def to_dict(self, classes: tuple[str, ...], digits: int = 4) -> dict:
        return {name: {"share": round(float(p), digits), "low": round(float(lo), digits),
                       "high": round(float(hi), digits)}
                for name, p, lo, hi in zip(classes, self.point, self.low, self.high)}


def shares(method: str, collection: Answers, validation: Answers | None, rounds: int = 1000,
           confidence: float = 0.95, seed: int = 0) -> Shares:
    """The point estimate and a percentile bootstrap interval: each round resamples the collection's faces
    (at most MAX_BOOTSTRAP_ROWS of them, see the module docstring) and, for correcting methods, the
    validation faces."""
    if len(collection) == 0:
        nothing = np.full(collection.classes, np.nan)
        return Shares(method, nothing, nothing, nothing)
    point = estimate(method, collection, validation)[0]
    if rounds <= 0:
        return Shares(method, point, point.copy(), point.copy())
    rng = np.random.default_rng(seed)
    sample = collection
    if len(collection) > MAX_BOOTSTRAP_ROWS:
        sample = collection.take(np.sort(rng.choice(len(collection), MAX_BOOTSTRAP_ROWS, replace=False)))
    # One BLAS thread: these products are small, and OpenBLAS's threads made them 15x slower on a busy 2-CPU host.
    with threadpool_limits(1, user_api="blas"):
        replicates = _bootstrap(method, sample, validation, rounds, rng)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(replicates, [tail, 100 - tail], axis=0)
    return Shares(method, point, low, high)


def _bootstrap(method: str, sample: Answers, validation: Answers | None, rounds: int,
               rng: np.random.Generator) -> np.ndarray:
    """[rounds, C]: the estimates of `rounds` resamplings, computed in chunks that bound the memory."""
    replicates = []
    chunk = max(1, BOOTSTRAP_VALUES // max(len(sample), len(validation) if validation is not None else 0))
    for start in range(0, rounds, chunk):
        count = min(chunk, rounds - start)
        weights = resampling_weights(len(sample), count, rng)
        validation_weights = (resampling_weights(len(validation), count, rng)
                              if method in CORRECTING else None)
        replicates.append(estimate(method, sample, validation, weights, validation_weights))
    return np.concatenate(replicates)
