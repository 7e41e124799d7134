"""Age as a distribution: smoothed training targets, and the read-outs that turn an age head's probabilities
into a 9-bin label and a number of years.

Read-outs (chosen on the validation split by `choose_readout`, recorded in model.json as "readout"):
- bins: "argmax" (the head's most likely class, mapped to its bin in exact mode), "summed" (exact mode: the
  bin whose summed exact-age probabilities are largest), "expected" (the bin of the expected age);
- years: "mean" (the expected age) or "median" (the posterior median, interpolated inside its class).
"""

from __future__ import annotations

import numpy as np
from scipy.special import ndtr

from argml.labels import AGE_BINS, EXACT_AGE_TOP, age_classes

DEFAULT_READOUT = {"bins": "argmax", "years": "mean"}  # models trained before read-outs were chosen
MAX_AGE = 120


def class_ranges(mode: str) -> np.ndarray:
    """[C, 2]: the first and last age (years, inclusive) of each age class; the open top class ends at MAX_AGE."""
    if mode == "binned":
        return np.array([(low, high or MAX_AGE) for low, high in AGE_BINS], dtype=np.float64)
    age_classes(mode)  # validates the mode
    ranges = [(age, age) for age in range(1, EXACT_AGE_TOP)] + [(EXACT_AGE_TOP, MAX_AGE)]
    return np.array(ranges, dtype=np.float64)


def smoothed_targets(age_years: np.ndarray, mode: str, sigma: float) -> np.ndarray:
    """[N, C] training targets: a Gaussian of width `sigma` years around each true age, integrated over every
    class's range of ages and truncated to ages 1-MAX_AGE (one-hot when sigma is 0). Rows sum to 1; they peak
    at the true age's class except next to the open top class, which spans many years."""
    ages = np.clip(np.asarray(age_years, dtype=np.float64), 1, MAX_AGE)[:, None]
    low, high = class_ranges(mode).T
    if sigma <= 0:
        return ((ages >= low - 0.5) & (ages < high + 0.5)).astype(np.float32)
    mass = ndtr((high + 0.5 - ages) / sigma) - ndtr((low - 0.5 - ages) / sigma)
    return (mass / mass.sum(axis=1, keepdims=True)).astype(np.float32)


def bins_of_years(years: np.ndarray) -> np.ndarray:
    """The 9-bin index of each (fractional) age in years, rounded to the nearest whole year."""
    rounded = np.clip(np.rint(np.asarray(years, dtype=np.float64)), 1, None)
    edges = np.array([low for low, _ in AGE_BINS[1:]], dtype=np.float64)
    return np.searchsorted(edges, rounded, side="right")


def exact_to_bins(probabilities: np.ndarray) -> np.ndarray:
    """[N, 63] exact-age probabilities -> [N, 9] bin probabilities (sums over each bin's ages)."""
    ages = np.arange(1, EXACT_AGE_TOP + 1)
    bin_of_class = bins_of_years(ages)
    summed = np.zeros((len(probabilities), len(AGE_BINS)), dtype=np.float64)
    np.add.at(summed.T, bin_of_class, np.asarray(probabilities, dtype=np.float64).T)
    return summed


def expected_years(probabilities: np.ndarray, age_values) -> np.ndarray:
    return np.asarray(probabilities, dtype=np.float64) @ np.asarray(age_values, dtype=np.float64)


def median_years(probabilities: np.ndarray, mode: str) -> np.ndarray:
    """The posterior median age: the class where the cumulative probability passes 1/2, interpolated linearly
    over that class's ages (exact classes span one year, so there it is the class's age, give or take 1/2)."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    cumulative = np.cumsum(probabilities, axis=1)
    cumulative /= cumulative[:, -1:]
    index = np.minimum((cumulative < 0.5).sum(axis=1), probabilities.shape[1] - 1)
    rows = np.arange(len(probabilities))
    before = np.where(index > 0, cumulative[rows, np.maximum(index - 1, 0)], 0.0)
    share = (0.5 - before) / np.maximum(cumulative[rows, index] - before, 1e-12)
    low, high = class_ranges(mode)[index].T
    return low - 0.5 + share * (high - low + 1)


def read_bins(probabilities: np.ndarray, mode: str, age_values, how: str) -> np.ndarray:
    """The predicted 9-bin index of each row under read-out `how` (see the module's docstring)."""
    probabilities = np.asarray(probabilities)
    if how == "argmax":
        best = probabilities.argmax(axis=1)
        return best if mode == "binned" else bins_of_years(best + 1)
    if how == "summed":
        if mode != "exact":
            raise ValueError("the 'summed' bin read-out needs the exact age mode")
        return exact_to_bins(probabilities).argmax(axis=1)
    if how == "expected":
        return bins_of_years(expected_years(probabilities, age_values))
    raise ValueError(f"unknown bin read-out {how!r}; use argmax, summed or expected")


def read_years(probabilities: np.ndarray, mode: str, age_values, how: str) -> np.ndarray:
    if how == "mean":
        return expected_years(probabilities, age_values)
    if how == "median":
        return median_years(probabilities, mode)
    raise ValueError(f"unknown years read-out {how!r}; use mean or median")


def bin_readouts(mode: str) -> tuple[str, ...]:
    return ("argmax", "summed", "expected") if mode == "exact" else ("argmax", "expected")


def choose_readout(probabilities: np.ndarray, age_years: np.ndarray, mode: str, age_values) -> dict:
    """The read-outs that do best on the given (validation) faces: bins by 9-bin accuracy, years by mean
    absolute error; ties keep the earlier, simpler one. -> {"bins", "years", "scores"}."""
    true_bins = bins_of_years(age_years)
    bin_scores = {how: float((read_bins(probabilities, mode, age_values, how) == true_bins).mean())
                  for how in bin_readouts(mode)}
    year_scores = {how: float(np.abs(read_years(probabilities, mode, age_values, how) - age_years).mean())
                   for how in ("mean", "median")}
    return {"bins": max(bin_scores, key=lambda how: (bin_scores[how], -list(bin_scores).index(how))),
            "years": min(year_scores, key=lambda how: (year_scores[how], list(year_scores).index(how))),
            "scores": {"bin_accuracy": bin_scores, "mae": year_scores}}
