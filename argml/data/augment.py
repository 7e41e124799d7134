"""Class-balancing augmentation of the training split (validation and test are never augmented).

Minority races are topped up to `race_target` x the largest race; for the exact-age variant, rare exact-age
classes are then topped up to `exact_age_target` x the largest exact-age class. Each new image is an aligned training image with
one adjustment picked at random: a small rotation, a mirror flip, Gaussian noise, or noise + flip.
One seeded generator drives every choice, so the same seed gives the same bytes.
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from tqdm import tqdm

from argml.core.images import read_aligned

ADJUSTMENTS = ("rotate", "flip", "noise", "noise_flip")
LABEL_COLUMNS = ["age", "gender", "race", "age_bin", "age_class"]
COPY_PREFIX = "aug-"  # copies are named aug-<purpose>-<index>-<source file>


def adjust(rgb: np.ndarray, adjustment: str, rng: np.random.Generator, max_angle: float,
           noise_sigma: float) -> np.ndarray:
    if adjustment == "rotate":
        height, width = rgb.shape[:2]
        angle = rng.uniform(-max_angle, max_angle)
        matrix = cv2.getRotationMatrix2D((width / 2, height / 2), angle, 1.0)
        return cv2.warpAffine(rgb, matrix, (width, height), borderMode=cv2.BORDER_REFLECT)
    if adjustment == "flip":
        return rgb[:, ::-1].copy()
    if adjustment in ("noise", "noise_flip"):
        noisy = rgb.astype(np.float32) + rng.normal(0.0, noise_sigma, rgb.shape)
        noisy = np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
        return noisy[:, ::-1].copy() if adjustment == "noise_flip" else noisy
    raise ValueError(f"unknown adjustment {adjustment!r}; use one of {ADJUSTMENTS}")


def copy_name(purpose: str, index: int, source: str) -> str:
    return f"{COPY_PREFIX}{purpose}-{index:05d}-{source}"


def copy_source(file_name: str) -> str:
    """The original an augmented copy (see copy_name) was made from."""
    if not file_name.startswith(COPY_PREFIX):
        raise ValueError(f"{file_name!r} is not an augmented copy")
    return file_name.split("-", 3)[3]


def _top_up(rows: pd.DataFrame, column: str, target: int, purpose: str, rng: np.random.Generator) -> pd.DataFrame:
    """Rows to copy so that every class of `column` reaches `target`; sources cycle through a shuffle."""
    picks = []
    for value, group in rows.groupby(column, sort=True):
        need = target - len(group)
        if need > 0:
            order = rng.permutation(len(group))
            picks.append(group.iloc[np.resize(order, need)])
    if not picks:
        return rows.iloc[0:0].assign(purpose=purpose)
    return pd.concat(picks).assign(purpose=purpose)


def _target(rows: pd.DataFrame, column: str, fraction: float, name: str) -> int:
    if not 0 <= fraction <= 1:
        raise ValueError(f"augment.{name} must be in [0, 1], got {fraction}")
    return math.ceil(fraction * int(rows[column].value_counts().max()))


def plan(train: pd.DataFrame, race_target: float, exact_age_target: float, seed: int) -> pd.DataFrame:
    """Which training images to copy, and why: one row per new image (purpose 'race' or 'exact_age')."""
    rng = np.random.default_rng(seed)
    race_rows = _top_up(train, "race", _target(train, "race", race_target, "race_target"), "race", rng)
    # Exact-age top-up counts the race copies already made, since the exact variant trains on both.
    with_race = pd.concat([train, race_rows])
    age_target = _target(with_race, "age_class", exact_age_target, "exact_age_target")
    age_rows = _top_up(with_race, "age_class", age_target, "exact_age", rng)
    planned = pd.concat([race_rows, age_rows], ignore_index=True)
    planned["adjustment"] = rng.choice(ADJUSTMENTS, size=len(planned))
    planned["seed"] = rng.integers(0, 2**31, size=len(planned))
    planned = planned.rename(columns={"file": "source"})
    planned["file"] = [copy_name(purpose, index, source) for index, (purpose, source)
                       in enumerate(zip(planned["purpose"], planned["source"]))]
    return planned[["file", "source", "purpose", "adjustment", "seed"] + LABEL_COLUMNS]


def make_images(planned: pd.DataFrame, aligned_dir: str | Path, out_dir: str | Path, max_angle: float,
                noise_sigma: float, jpeg_quality: int = 95) -> None:
    """Write each planned image; each has its own seed, so the bytes do not depend on processing order."""
    aligned_dir, out_dir = Path(aligned_dir), Path(out_dir)
    for row in tqdm(planned.itertuples(), total=len(planned), desc="augment", unit="img", mininterval=1):
        bgr = read_aligned(aligned_dir / row.source)
        rng = np.random.default_rng(row.seed)
        new = adjust(bgr, row.adjustment, rng, max_angle, noise_sigma)
        if not cv2.imwrite(str(out_dir / row.file), new, [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality]):
            raise OSError(f"could not write {out_dir / row.file}")


def summary(train: pd.DataFrame, planned: pd.DataFrame) -> dict:
    """Counts for reports/augment.json: what was added, and the race balance before and after."""
    from argml.data.utkface import RACES

    race_copies = planned[planned["purpose"] == "race"]
    return {
        "train_images": int(len(train)),
        "new_images": int(len(planned)),
        "per_purpose": {k: int(v) for k, v in planned["purpose"].value_counts().sort_index().items()},
        "per_adjustment": {k: int(v) for k, v in planned["adjustment"].value_counts().sort_index().items()},
        "race_before": {RACES[k]: int(v) for k, v in train["race"].value_counts().sort_index().items()},
        "race_after": {RACES[k]: int(v) for k, v in
                       pd.concat([train, race_copies])["race"].value_counts().sort_index().items()},
    }
