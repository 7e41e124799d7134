"""Age as a distribution: smoothed training targets, and the read-outs that turn an age head's probabilities
into a 9-bin label and a number of years.

Read-outs (chosen on the validation split by `choose_readout`, recorded in the model card as `readout`):
- bins: "argmax" (the head's most likely class, mapped to its bin in exact mode), "summed" (exact mode: the
  bin whose summed exact-age probabilities are largest), "expected" (the bin of the expected age);
- years: "mean" (the expected age) or "median" (the posterior median, interpolated inside its class).
"""

from __future__ import annotations

import numpy as np
from scipy.special import ndtr

from argml.core.card import YEAR_READOUTS, Readout
from argml.core.labels import AGE_BINS, EXACT_AGE_TOP, MAX_AGE, AgeMode, bins_of_years


def smoothed_targets(age_years: np.ndarray, mode: AgeMode, sigma: float) -> np.ndarray:
    """[N, C] training targets: a Gaussian of width `sigma` years around each true age, integrated over every
    class's range of ages and truncated to ages 1-MAX_AGE (one-hot when sigma is 0). Rows sum to 1; they peak
    at the true age's class except next to the open top class, which spans many years."""
    ages = np.clip(np.asarray(age_years, dtype=np.float64), 1, MAX_AGE)[:, None]
    low, high = mode.class_ranges().T
    if sigma <= 0:
        return ((ages >= low - 0.5) & (ages < high + 0.5)).astype(np.float32)
    mass = ndtr((high + 0.5 - ages) / sigma) - ndtr((low - 0.5 - ages) / sigma)
    return (mass / mass.sum(axis=1, keepdims=True)).astype(np.float32)


def exact_to_bins(probabilities: np.ndarray) -> np.ndarray:
    """[N, 63] exact-age probabilities -> [N, 9] bin probabilities (sums over each bin's ages)."""
    ages = np.arange(1, EXACT_AGE_TOP + 1)
    bin_of_class = bins_of_years(ages)
    summed = np.zeros((len(probabilities), len(AGE_BINS)), dtype=np.float64)
    np.add.at(summed.T, bin_of_class, np.asarray(probabilities, dtype=np.float64).T)
    return summed


def bin_probabilities(probabilities: np.ndarray, mode: AgeMode) -> np.ndarray:
    """[N, 9] probabilities of the 9 bins: the binned head's own, or the exact head's summed over each bin."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    return probabilities if mode.binned else exact_to_bins(probabilities)


def expected_years(probabilities: np.ndarray, age_values) -> np.ndarray:
    return np.asarray(probabilities, dtype=np.float64) @ np.asarray(age_values, dtype=np.float64)


def median_years(probabilities: np.ndarray, mode: AgeMode) -> np.ndarray:
    """The posterior median age: the class where the cumulative probability passes 1/2, interpolated linearly
    over that class's ages (exact classes span one year, so there it is the class's age, give or take 1/2)."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    cumulative = np.cumsum(probabilities, axis=1)
    cumulative /= cumulative[:, -1:]
    index = np.minimum((cumulative < 0.5).sum(axis=1), probabilities.shape[1] - 1)
    rows = np.arange(len(probabilities))
    before = np.where(index > 0, cumulative[rows, np.maximum(index - 1, 0)], 0.0)
    share = (0.5 - before) / np.maximum(cumulative[rows, index] - before, 1e-12)
    low, high = mode.class_ranges()[index].T
    return low - 0.5 + share * (high - low + 1)


def read_bins(probabilities: np.ndarray, mode: AgeMode, age_values, how: str) -> np.ndarray:
    """The predicted 9-bin index of each row under read-out `how` (see the module's docstring)."""
    probabilities = np.asarray(probabilities)
    if how == "summed" and mode.binned:
        raise ValueError("the 'summed' bin read-out needs the exact age mode")
    if how not in mode.bin_readouts:
        raise ValueError(f"unknown bin read-out {how!r}; use {', '.join(mode.bin_readouts)}")
    if how == "argmax":
        return mode.bins_of_classes(probabilities.argmax(axis=1))
    if how == "summed":
        return exact_to_bins(probabilities).argmax(axis=1)
    return bins_of_years(expected_years(probabilities, age_values))


def read_years(probabilities: np.ndarray, mode: AgeMode, age_values, how: str) -> np.ndarray:
    if how == "mean":
        return expected_years(probabilities, age_values)
    if how == "median":
        return median_years(probabilities, mode)
    raise ValueError(f"unknown years read-out {how!r}; use {' or '.join(YEAR_READOUTS)}")


def choose_readout(probabilities: np.ndarray, age_years: np.ndarray, mode: AgeMode, age_values) -> dict:
    """The read-outs that do best on the given (validation) faces: bins by 9-bin accuracy, years by mean
    absolute error; ties keep the earlier, simpler one. -> {"bins", "years", "scores"}."""
    true_bins = bins_of_years(age_years)
    bin_scores = {how: float((read_bins(probabilities, mode, age_values, how) == true_bins).mean())
                  for how in mode.bin_readouts}
    year_scores = {how: float(np.abs(read_years(probabilities, mode, age_values, how) - age_years).mean())
                   for how in YEAR_READOUTS}
    return {"bins": max(bin_scores, key=lambda how: (bin_scores[how], -list(bin_scores).index(how))),
            "years": min(year_scores, key=lambda how: (year_scores[how], list(year_scores).index(how))),
            "scores": {"bin_accuracy": bin_scores, "mae": year_scores}}


def answer_readout(probabilities: np.ndarray, mode: AgeMode, age_values, readout: Readout):
    """(9-bin index, years) of each row under a model's recorded read-out."""
    return (read_bins(probabilities, mode, age_values, readout.bins),
            read_years(probabilities, mode, age_values, readout.years))
