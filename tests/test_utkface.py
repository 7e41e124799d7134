"""argml.data.utkface and argml.core.labels: name parsing, age bins, scan + deduplicate, the stratified sample and split, the table file."""

from __future__ import annotations

import gzip

import pandas as pd
import pytest

from argml.core import labels
from argml.core.labels import AGE_BINS, age_bin, age_class
from argml.data import utkface
from argml.data.utkface import MalformedName, parse_name

from conftest import NO_RACE_NAMES, ODD_DATETIME_NAMES, TYPO_NAMES

TABLE_COLUMNS = ["file", "md5", "age", "gender", "race", "age_bin", "age_class", "split"]


# --- parse_name ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", NO_RACE_NAMES)
def test_names_without_race_are_malformed(name):
    with pytest.raises(MalformedName, match="race"):
        parse_name(name)


@pytest.mark.parametrize("name, expected", TYPO_NAMES.items())
def test_typo_names_are_recovered_with_a_note(name, expected):
    parsed = parse_name(name)
    assert (parsed.age, parsed.gender, parsed.race) == expected
    assert parsed.note, "a recovered name must say it was irregular"


@pytest.mark.parametrize("name, expected", ODD_DATETIME_NAMES.items())
def test_16_and_18_digit_datetimes_parse_cleanly(name, expected):
    parsed = parse_name(name)
    assert (parsed.age, parsed.gender, parsed.race) == expected
    assert parsed.note == ""


def test_regular_name():
    parsed = parse_name("116_1_3_20170120134921760.jpg.chip.jpg")
    assert (parsed.age, parsed.gender, parsed.race, parsed.note) == (116, 1, 3, "")


@pytest.mark.parametrize("name", [
    "0_0_0_20170110225502403.jpg.chip.jpg",  # age 0
    "117_0_0_20170110225502403.jpg.chip.jpg",  # above the set's range
    "30_2_0_20170110225502403.jpg.chip.jpg",  # gender 2
    "30_0_5_20170110225502403.jpg.chip.jpg",  # race 5
    "30_0_0_20170110225502403.jpg",  # not a chip
    "x_0_0_20170110225502403.jpg.chip.jpg",
    "notes.txt",
    "",
])
def test_bad_names_raise_malformed(name):
    with pytest.raises(MalformedName):
        parse_name(name)


def test_odd_names_exist_in_the_real_set(utkface_dir):
    for name in (*NO_RACE_NAMES, *TYPO_NAMES, *ODD_DATETIME_NAMES):
        assert (utkface_dir / name).is_file(), name


# --- age bins ----------------------------------------------------------------------------------------------

def test_there_are_nine_bins_as_published():
    assert AGE_BINS == ((1, 5), (6, 12), (13, 19), (20, 26), (27, 34), (35, 42), (43, 49), (50, 61), (62, None))
    assert labels.AGE_BIN_NAMES == ("1-5", "6-12", "13-19", "20-26", "27-34", "35-42", "43-49", "50-61", "62+")


@pytest.mark.parametrize("index, low, high", [(i, low, high) for i, (low, high) in enumerate(AGE_BINS)])
def test_age_bin_boundaries(index, low, high):
    assert age_bin(low) == index
    if high is None:
        assert age_bin(116) == index
    else:
        assert age_bin(high) == index
        assert age_bin(high + 1) == index + 1
    if index:
        assert age_bin(low - 1) == index - 1


def test_age_bin_below_one_raises():
    with pytest.raises(ValueError):
        age_bin(0)


@pytest.mark.parametrize("age, expected", [(1, 0), (2, 1), (61, 60), (62, 61), (63, 62), (90, 62), (116, 62)])
def test_age_class(age, expected):
    assert age_class(age) == expected
    assert labels.EXACT_AGE_NAMES[expected] == (str(age) if age < 63 else "63+")


def test_age_class_below_one_raises():
    with pytest.raises(ValueError):
        age_class(0)


def test_age_classes_modes():
    assert len(labels.AgeMode.of("binned").classes) == 9
    assert len(labels.AgeMode.of("exact").classes) == 63
    with pytest.raises(ValueError):
        labels.AgeMode.of("years").classes


# --- scan + deduplicate ------------------------------------------------------------------------------------

def test_scan_and_deduplicate_a_real_sample(utkface_sample, utkface_index):
    sample = utkface_sample(40, odd=True, pairs=2)
    (sample.dir / "README.txt").write_text("not an image")
    assert len(sample.agreeing_pairs) == 2 and len(sample.conflicting_pairs) == 2

    table, malformed = utkface.scan(sample.dir)

    assert sorted(table["file"]) == sorted(set(sample.files) - set(NO_RACE_NAMES))
    assert {m["file"]: m["recovered"] for m in malformed} == {
        **{name: False for name in NO_RACE_NAMES}, **{name: True for name in TYPO_NAMES}}
    assert (table["md5"] == table["file"].map(utkface_index.md5)).all()
    assert (table["age_bin"] == table["age"].map(age_bin)).all()
    assert (table["age_class"] == table["age"].map(age_class)).all()
    typo = table.set_index("file").loc["24_0_1_20170116220224657 .jpg.chip.jpg"]
    assert (typo["age"], typo["gender"], typo["race"]) == (24, 0, 1)

    kept, report = utkface.deduplicate(table)

    assert kept["md5"].is_unique
    for first, second in sample.agreeing_pairs:  # same image, same labels: one copy stays
        assert (first in set(kept["file"])) != (second in set(kept["file"]))
    for pair in sample.conflicting_pairs:  # same image, different labels: no trustworthy label
        assert not set(pair) & set(kept["file"])
    assert set(sample.plain) <= set(kept["file"])
    assert len(kept) == len(table) - 2 - 4
    assert report == {"duplicate_groups": 4, "extra_copies": 4, "conflicting_label_groups": 2,
                      "dropped_for_conflicting_labels": 4, "removed_total": 6}


def test_scan_ignores_non_images_and_rejects_a_folder_without_images(tmp_path):
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(FileNotFoundError):
        utkface.scan(tmp_path)


def test_deduplicate_without_duplicates_keeps_everything(utkface_sample):
    sample = utkface_sample(12, odd=False, pairs=0)
    table, _ = utkface.scan(sample.dir)
    kept, report = utkface.deduplicate(table)
    assert len(kept) == 12
    assert report["removed_total"] == 0 and report["duplicate_groups"] == 0


def test_whole_set_matches_source_md(real_label_table, utkface_index):
    """SOURCE.md: 23,708 files, 23,705 parse, 5 irregular names, 375 duplicate groups with 390 extra copies."""
    table, malformed, unique, report = real_label_table
    assert len(utkface_index.md5) == 23708
    assert len(utkface_index.groups) == 375
    assert sum(len(names) - 1 for names in utkface_index.groups.values()) == 390
    assert len(table) == 23705
    assert sorted(m["file"] for m in malformed) == sorted([*NO_RACE_NAMES, *TYPO_NAMES])
    # deduplicate's counts against an independent count over the parsed files
    parsed_groups = table.groupby("md5")["file"].count()
    parsed_groups = parsed_groups[parsed_groups > 1]
    assert report["duplicate_groups"] == len(parsed_groups)
    assert report["extra_copies"] == int((parsed_groups - 1).sum())
    assert unique["md5"].is_unique and unique["file"].is_unique
    assert len(unique) == len(table) - report["removed_total"]


# --- sample and split --------------------------------------------------------------------------------------

def _stratum_counts(table: pd.DataFrame) -> pd.Series:
    return utkface.strata(table).value_counts()


def test_split_is_disjoint_and_exact(real_label_table):
    unique = real_label_table[2]
    result = utkface.split(unique, 0.1, 0.1, seed=42)
    n = len(unique)
    sizes = result["split"].value_counts()
    assert sizes["val"] == round(0.1 * n) and sizes["test"] == round(0.1 * n)
    assert sizes["train"] == n - 2 * round(0.1 * n)
    assert set(result["split"]) == {"train", "val", "test"}
    parts = {name: result[result["split"] == name] for name in labels.SPLITS}
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        assert not set(parts[a]["file"]) & set(parts[b]["file"])
        assert not set(parts[a]["md5"]) & set(parts[b]["md5"])
    assert result.drop(columns="split").equals(unique), "split must only add a column"


def test_split_keeps_every_stratum_share(real_label_table):
    unique = real_label_table[2]
    result = utkface.split(unique, 0.1, 0.1, seed=42)
    totals = _stratum_counts(result)
    for name, fraction in (("train", 0.8), ("val", 0.1), ("test", 0.1)):
        counts = _stratum_counts(result[result["split"] == name]).reindex(totals.index, fill_value=0)
        worst = (counts - fraction * totals).abs().max()
        assert worst <= 1.5, f"{name}: a stratum is off by {worst:.1f} images"


def test_split_other_fractions_are_exact(real_label_table):
    unique = real_label_table[2]
    result = utkface.split(unique, 0.15, 0.05, seed=1)
    sizes = result["split"].value_counts()
    assert sizes["val"] == round(0.15 * len(unique)) and sizes["test"] == round(0.05 * len(unique))


def test_split_seed(real_label_table):
    unique = real_label_table[2]
    first = utkface.split(unique, 0.1, 0.1, seed=42)
    again = utkface.split(unique, 0.1, 0.1, seed=42)
    other = utkface.split(unique, 0.1, 0.1, seed=43)
    assert first["split"].tolist() == again["split"].tolist()
    changed = (first["split"] != other["split"]).mean()
    assert changed > 0.1, f"another seed moved only {changed:.1%} of the rows"


def test_split_of_a_small_sample_with_singleton_strata(utkface_sample):
    sample = utkface_sample(30, odd=True, pairs=2)
    kept, _ = utkface.deduplicate(utkface.scan(sample.dir)[0])
    result = utkface.split(kept, 0.1, 0.1, seed=0)
    sizes = result["split"].value_counts()
    assert sizes.get("val", 0) == round(0.1 * len(kept)) and sizes.get("test", 0) == round(0.1 * len(kept))
    assert sizes.sum() == len(kept)


@pytest.mark.parametrize("val, test", [(0, 0.1), (0.1, 0), (0.5, 0.5), (-0.1, 0.2), (0.7, 0.4)])
def test_split_rejects_bad_fractions(real_label_table, val, test):
    with pytest.raises(ValueError):
        utkface.split(real_label_table[2].head(50), val, test, seed=0)


@pytest.mark.parametrize("limit", [1, 120, 1000])
def test_sample_size_and_stratum_proportions(real_label_table, limit):
    unique = real_label_table[2]
    chosen = utkface.sample(unique, limit, seed=42)
    assert len(chosen) == limit
    assert chosen["file"].is_unique
    assert set(chosen["file"]) <= set(unique["file"])
    merged = chosen.merge(unique, on="file", suffixes=("", "_orig"))
    assert (merged["md5"] == merged["md5_orig"]).all() and (merged["age"] == merged["age_orig"]).all()
    totals = _stratum_counts(unique)
    counts = _stratum_counts(chosen).reindex(totals.index, fill_value=0)
    worst = (counts - limit * totals / len(unique)).abs().max()
    assert worst <= 1.5, f"a stratum is off by {worst:.1f} images in a sample of {limit}"


def test_sample_is_seeded(real_label_table):
    unique = real_label_table[2]
    assert utkface.sample(unique, 200, 5)["file"].tolist() == utkface.sample(unique, 200, 5)["file"].tolist()
    assert utkface.sample(unique, 200, 5)["file"].tolist() != utkface.sample(unique, 200, 6)["file"].tolist()


def test_sample_zero_or_too_large_means_all_and_negative_raises(real_label_table):
    unique = real_label_table[2].head(300)
    assert len(utkface.sample(unique, 0, 1)) == 300
    assert len(utkface.sample(unique, 300, 1)) == 300
    assert len(utkface.sample(unique, 5000, 1)) == 300
    with pytest.raises(ValueError):
        utkface.sample(unique, -1, 1)


def test_summary_counts(real_label_table):
    chosen = utkface.sample(real_label_table[2], 500, 3)
    result = utkface.split(chosen, 0.1, 0.1, 3)
    report = utkface.summary(result)
    assert report["total"] == 500
    assert sum(part["images"] for part in report["per_split"].values()) == 500
    for name, part in report["per_split"].items():
        assert sum(part["gender"].values()) == part["images"] == (result["split"] == name).sum()
        assert sum(part["race"].values()) == part["images"]
        assert sum(part["age_bin"].values()) == part["images"]


# --- the table file ----------------------------------------------------------------------------------------

@pytest.fixture
def small_split(utkface_sample):
    sample = utkface_sample(30, odd=True, pairs=2)
    kept, _ = utkface.deduplicate(utkface.scan(sample.dir)[0])
    return sample, utkface.split(kept, 0.1, 0.1, seed=0)


def test_save_and_load_round_trip(small_split, tmp_path):
    _, table = small_split
    path = tmp_path / "split.csv.gz"
    utkface.save_table(table.sample(frac=1.0, random_state=1), path)  # rows out of order on purpose
    with gzip.open(path, "rt") as handle:
        assert handle.readline().strip() == ",".join(TABLE_COLUMNS)
    loaded = utkface.load_table(path)
    expected = table[TABLE_COLUMNS].sort_values("file").reset_index(drop=True)
    pd.testing.assert_frame_equal(loaded, expected, check_dtype=False)
    assert loaded["file"].str.contains(" ").any(), "the real name with a space must survive the round trip"
    assert not list(tmp_path.glob(".split.csv.gz.*")), "no staging file left behind"


def test_save_table_twice_gives_the_same_bytes(small_split, tmp_path):
    _, table = small_split
    first, second = tmp_path / "a" / "split.csv.gz", tmp_path / "b" / "split.csv.gz"
    utkface.save_table(table, first)
    utkface.save_table(table.iloc[::-1], second)
    assert first.read_bytes() == second.read_bytes()


def test_load_table_missing_file_says_what_to_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="dvc repro labels"):
        utkface.load_table(tmp_path / "split.csv.gz")


def test_with_files_keeps_present_rows(small_split, tmp_path):
    sample, table = small_split
    present = table["file"].iloc[:5].tolist()
    for name in present:
        (tmp_path / name).write_bytes((sample.dir / name).read_bytes())
    result = utkface.with_files(table, tmp_path)
    assert sorted(result["file"]) == sorted(present)
    assert all(path == str(tmp_path / name) for name, path in zip(result["file"], result["path"]))
