"""UTKFace as a table: file-name parsing, deduplication, the stratified sample and the 80/10/10 split.

UTKFace names its files `age_gender_race_datetime.jpg.chip.jpg` (gender 0 male / 1 female; race 0 White,
1 Black, 2 Asian, 3 Indian, 4 Other). The output of this module is one table, a row per kept image:
file, md5, age, gender, race, age_bin, age_class, split.
"""

from __future__ import annotations

import gzip
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from argml.core.errors import BadInput
from argml.core.files import atomic_path, file_digest, is_image_name
from argml.core.labels import AGE_BIN_NAMES, GENDERS, RACES, SPLITS, age_bin, age_class


@dataclass(frozen=True)
class Parsed:
    age: int
    gender: int
    race: int
    note: str = ""  # non-empty when the name was irregular but unambiguous


class MalformedName(BadInput):
    pass


# re.ASCII: \d and \s would otherwise also match other scripts' digits and spaces ("1_0_0_٠.jpg.chip.jpg");
# \Z, not $: $ also matches before a final newline.
_STRICT = re.compile(r"^(\d{1,3})_([01])_([0-4])_(\d+)\.jpg\.chip\.jpg\Z", re.ASCII)
# Typos seen in UTKFace: a space before the extension, or a missing dot. Labels are still unambiguous.
_LENIENT = re.compile(r"^(\d{1,3})_([01])_([0-4])_(\d+)\s*\.?jpg\.chip\.jpg\Z", re.ASCII)
_NO_RACE = re.compile(r"^(\d{1,3})_([01])_(\d+)\.jpg\.chip\.jpg\Z", re.ASCII)


def parse_name(name: str) -> Parsed:
    """Labels from a UTKFace file name; raises MalformedName saying why it cannot be trusted."""
    match = _STRICT.match(name)
    note = ""
    if not match:
        match = _LENIENT.match(name)
        note = "irregular extension (typo), labels unambiguous"
    if not match:
        if _NO_RACE.match(name):
            raise MalformedName("no race field (age_gender_datetime): race unknown")
        raise MalformedName("does not match age_gender_race_datetime.jpg.chip.jpg")
    age, gender, race = (int(group) for group in match.groups()[:3])
    if not 1 <= age <= 116:
        raise MalformedName(f"age {age} outside 1-116")
    return Parsed(age, gender, race, note)


def scan(folder: str | Path) -> tuple[pd.DataFrame, list[dict]]:
    """Parse and hash every image in `folder`: (table of parsable images, list of malformed names)."""
    folder = Path(folder)
    names = sorted(name for name in (p.name for p in folder.iterdir()) if is_image_name(name))
    if not names:
        raise FileNotFoundError(f"no images in {folder}")
    rows, malformed = [], []
    for name in tqdm(names, desc="hash + parse", unit="img", mininterval=1):
        try:
            parsed = parse_name(name)
        except MalformedName as error:
            malformed.append({"file": name, "reason": str(error), "recovered": False})
            continue
        if parsed.note:
            malformed.append({"file": name, "reason": parsed.note, "recovered": True})
        rows.append({"file": name, "md5": file_digest(folder / name), "age": parsed.age,
                     "gender": parsed.gender, "race": parsed.race})
    if not rows:
        raise BadInput(f"none of the {len(names)} images in {folder} has a parsable UTKFace name "
                       "(age_gender_race_datetime.jpg.chip.jpg)")
    table = pd.DataFrame(rows)
    table["age_bin"] = table["age"].map(age_bin)
    table["age_class"] = table["age"].map(age_class)
    return table, malformed


def deduplicate(table: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """Collapse byte-identical images to one row.

    A group whose copies carry different labels has no trustworthy label, so the whole group is dropped.
    """
    label_columns = ["age", "gender", "race"]
    groups = table.groupby("md5")
    sizes = groups["file"].transform("size")
    label_variants = groups[label_columns].transform("nunique").max(axis=1)
    conflicting = (sizes > 1) & (label_variants > 1)
    consistent = table[~conflicting].sort_values("file")
    kept = consistent.drop_duplicates("md5", keep="first").reset_index(drop=True)
    duplicated = table[sizes > 1]
    report = {
        "duplicate_groups": int(duplicated["md5"].nunique()),
        "extra_copies": int(len(duplicated) - duplicated["md5"].nunique()),
        "conflicting_label_groups": int(table.loc[conflicting, "md5"].nunique()),
        "dropped_for_conflicting_labels": int(conflicting.sum()),
        "removed_total": int(len(table) - len(kept)),
    }
    return kept, report


def strata(table: pd.DataFrame) -> pd.Series:
    return table["gender"].astype(str) + "_" + table["race"].astype(str) + "_" + table["age_bin"].astype(str)


def stratified_keys(groups: pd.Series, seed: int) -> np.ndarray:
    """A key in [0, 1) per row, spread evenly inside each group (after a seeded shuffle).

    Cutting the keys at any threshold t then takes t x n (within one) of every group of n rows. Unlike
    sklearn's stratified splitters this accepts groups of a single row, which small samples always have.
    """
    rng = np.random.default_rng(seed)
    keys = np.empty(len(groups))
    for positions in groups.groupby(groups.to_numpy()).indices.values():
        order = rng.permutation(len(positions))
        keys[positions] = (order + rng.random()) / len(positions)
    return keys


def sample(table: pd.DataFrame, limit: int, seed: int) -> pd.DataFrame:
    """A stratified sample of exactly `limit` rows (all rows when limit is 0 or too large)."""
    if limit < 0:
        raise BadInput(f"data.limit must be >= 0, got {limit}")
    if limit == 0 or limit >= len(table):
        return table
    keys = stratified_keys(strata(table), seed)
    return table.iloc[np.argsort(keys, kind="stable")[:limit]].sort_values("file").reset_index(drop=True)


def split(table: pd.DataFrame, val_fraction: float, test_fraction: float, seed: int) -> pd.DataFrame:
    """Add a `split` column: train / val / test, stratified by gender x race x age bin.

    Rows are ranked by their stratified key and cut at exact sizes, so the split sizes are exact and every
    stratum's share of each split is right to within about one image.
    """
    if not (0 < val_fraction and 0 < test_fraction and val_fraction + test_fraction < 1):
        raise BadInput(f"bad split fractions val={val_fraction} test={test_fraction}")
    rank = np.argsort(np.argsort(stratified_keys(strata(table), seed), kind="stable"), kind="stable")
    n_val, n_test = round(val_fraction * len(table)), round(test_fraction * len(table))
    n_train = len(table) - n_val - n_test
    result = table.copy()
    result["split"] = np.where(rank < n_train, "train", np.where(rank < n_train + n_val, "val", "test"))
    return result


def summary(table: pd.DataFrame) -> dict:
    """Counts per split and per class, for reports/data.json."""
    counts = {"total": int(len(table)), "per_split": {}}
    for split_name in SPLITS:
        part = table[table["split"] == split_name]
        counts["per_split"][split_name] = {
            "images": int(len(part)),
            "gender": {GENDERS[k]: int(v) for k, v in part["gender"].value_counts().sort_index().items()},
            "race": {RACES[k]: int(v) for k, v in part["race"].value_counts().sort_index().items()},
            "age_bin": {AGE_BIN_NAMES[k]: int(v) for k, v in part["age_bin"].value_counts().sort_index().items()},
        }
    return counts


def save_table(table: pd.DataFrame, path: str | Path) -> None:
    """The published split table (gzip with a fixed mtime, so the same table gives the same bytes)."""
    columns = ["file", "md5", "age", "gender", "race", "age_bin", "age_class", "split"]
    text = table[columns].sort_values("file").to_csv(index=False)
    with atomic_path(path) as staging, open(staging, "wb") as raw:
        # no file name and no time in the gzip header: the same table always gives the same bytes
        with gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as compressed:
            compressed.write(text.encode())


def load_table(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run `dvc repro labels` first")
    return pd.read_csv(path, compression="gzip" if path.suffix == ".gz" else None)


def with_files(table: pd.DataFrame, folder: str | Path) -> pd.DataFrame:
    """Rows of `table` whose file exists in `folder`, with a `path` column."""
    folder = Path(folder)
    paths = table["file"].map(lambda name: folder / name)
    present = paths.map(Path.exists)
    return table[present].assign(path=paths[present].map(str)).reset_index(drop=True)
