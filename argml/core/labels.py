"""What argml predicts: the three tasks, their classes, the report's 9 age bins, and the two age modes.

UTKFace's labels: gender 0 male / 1 female; race 0 White, 1 Black, 2 Asian, 3 Indian, 4 Other; age in years.
An `AgeMode` holds everything that differs between the binned and the exact age head, so the rest of argml
asks the mode instead of comparing its name: its classes, the label column it learns, the balancing copies
it leaves out, the ages each class spans, and the read-outs that turn its probabilities into a 9-bin label.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from argml.core.errors import BadInput

TASKS = ("gender", "race", "age")  # the model's outputs, in the order reports show them
GENDERS = ("male", "female")
RACES = ("White", "Black", "Asian", "Indian", "Other")
TASK_CLASSES = {"gender": GENDERS, "race": RACES}
SPLITS = ("train", "val", "test")

# The seed report's 9 bins, as inclusive (low, high) ages; the last is open-ended.
AGE_BINS = ((1, 5), (6, 12), (13, 19), (20, 26), (27, 34), (35, 42), (43, 49), (50, 61), (62, None))
AGE_BIN_NAMES = tuple(f"{low}-{high}" if high else f"{low}+" for low, high in AGE_BINS)
EXACT_AGE_TOP = 63  # exact mode: one class per age 1-62, then one class for 63+
EXACT_AGE_NAMES = tuple(str(age) for age in range(1, EXACT_AGE_TOP)) + (f"{EXACT_AGE_TOP}+",)
MAX_AGE = 120  # where the open top classes end, for age ranges and distributions

# Training examples by origin (a TFRecord field): originals, race-balancing copies, exact-age-balancing copies.
VARIANTS = {"original": 0, "race": 1, "exact_age": 2}


def age_bin(age: int) -> int:
    for index, (low, high) in enumerate(AGE_BINS):
        if age >= low and (high is None or age <= high):
            return index
    raise ValueError(f"age {age} is below the first bin (ages start at 1)")


def age_class(age: int) -> int:
    if age < 1:
        raise ValueError(f"age {age} is below 1")
    return min(age, EXACT_AGE_TOP) - 1


def bins_of_years(years) -> np.ndarray:
    """The 9-bin index of each (fractional) age in years, rounded to the nearest whole year."""
    rounded = np.clip(np.rint(np.asarray(years, dtype=np.float64)), 1, None)
    edges = np.array([low for low, _ in AGE_BINS[1:]], dtype=np.float64)
    return np.searchsorted(edges, rounded, side="right")


@dataclass(frozen=True)
class AgeMode:
    """One way to predict age: the report's 9 bins, or one class per year (1-62, then 63+)."""

    name: str
    classes: tuple[str, ...]
    label_column: str  # the label its head learns (a column of the split table and of the TFRecords)
    left_out_variants: tuple[str, ...]  # balancing copies it neither trains nor evaluates on
    bin_readouts: tuple[str, ...]  # how its probabilities may become a 9-bin label (argml.model.age)

    @staticmethod
    def of(name: str) -> AgeMode:
        try:
            return AGE_MODES[name]
        except (KeyError, TypeError):
            raise BadInput(f"unknown age mode {name!r}; use {' or '.join(map(repr, AGE_MODES))}") from None

    @property
    def binned(self) -> bool:
        return self.name == "binned"

    def class_ranges(self) -> np.ndarray:
        """[C, 2]: the first and last age (years, inclusive) of each class; the open top class ends at MAX_AGE."""
        if self.binned:
            return np.array([(low, high or MAX_AGE) for low, high in AGE_BINS], dtype=np.float64)
        ranges = [(age, age) for age in range(1, EXACT_AGE_TOP)] + [(EXACT_AGE_TOP, MAX_AGE)]
        return np.array(ranges, dtype=np.float64)

    def bins_of_classes(self, classes) -> np.ndarray:
        """The 9-bin index of each of this mode's class indices."""
        classes = np.asarray(classes)
        return classes if self.binned else bins_of_years(classes + 1)

    def exact_classes(self, classes, years) -> np.ndarray:
        """The exact-age class of each answer: the class itself (exact mode), else that of the rounded years."""
        if not self.binned:
            return np.asarray(classes)
        return np.array([age_class(max(1, int(round(value)))) for value in years], dtype=np.int64)

    def task_classes(self) -> dict[str, tuple[str, ...]]:
        """Every task's class names, age in this mode's classes: {"age", "race", "gender"}."""
        return {"age": self.classes, **TASK_CLASSES}


AGE_MODES = {
    "binned": AgeMode("binned", AGE_BIN_NAMES, "age_bin", ("exact_age",), ("argmax", "expected")),
    "exact": AgeMode("exact", EXACT_AGE_NAMES, "age_class", (), ("argmax", "summed", "expected")),
}
