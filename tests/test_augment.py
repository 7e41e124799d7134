"""argml.augment: the class-balancing plan of the training split and the seeded, reproducible copies."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from argml.data import augment
from argml.data import utkface
from argml.data.augment import ADJUSTMENTS, adjust


@pytest.fixture(scope="module")
def split_table(real_label_table):
    """A real, stratified 600-image table with its split (the labels stage on a sample)."""
    chosen = utkface.sample(real_label_table[2], 600, seed=42)
    return utkface.split(chosen, 0.1, 0.1, seed=42)


def counts(frame, column):
    return frame[column].value_counts()


# --- plan --------------------------------------------------------------------------------------------------

def test_plan_uses_only_training_rows(split_table):
    train = split_table[split_table["split"] == "train"]
    planned = augment.plan(train, race_target=0.5, exact_age_target=0.1, seed=7)
    assert len(planned) > 0
    assert set(planned["source"]) <= set(train["file"])
    held_out = set(split_table.loc[split_table["split"] != "train", "file"])
    assert not set(planned["source"]) & held_out


def test_plan_tops_races_up_to_the_target(split_table):
    train = split_table[split_table["split"] == "train"]
    planned = augment.plan(train, race_target=0.5, exact_age_target=0.1, seed=7)
    before = counts(train, "race")
    target = math.ceil(0.5 * before.max())
    added = counts(planned[planned["purpose"] == "race"], "race").reindex(before.index, fill_value=0)
    assert ((before + added) == np.maximum(before, target)).all(), (before, added, target)
    assert added.sum() > 0, "this sample has minority races: something must be added"
    assert added[before.idxmax()] == 0, "the largest race is never copied"


def test_plan_exact_age_top_up(split_table):
    train = split_table[split_table["split"] == "train"]
    planned = augment.plan(train, race_target=0.5, exact_age_target=0.3, seed=7)
    race_copies = planned[planned["purpose"] == "race"]
    with_race = counts(train, "age_class").add(counts(race_copies, "age_class"), fill_value=0)
    target = math.ceil(0.3 * with_race.max())
    added = counts(planned[planned["purpose"] == "exact_age"], "age_class").reindex(with_race.index, fill_value=0)
    assert ((with_race + added) == np.maximum(with_race, target)).all()
    assert added.sum() > 0
    assert set(planned["purpose"]) == {"race", "exact_age"}


def test_plan_copies_keep_their_source_labels(split_table):
    train = split_table[split_table["split"] == "train"].set_index("file")
    planned = augment.plan(train.reset_index(), race_target=0.5, exact_age_target=0.3, seed=7)
    for column in augment.LABEL_COLUMNS:
        assert (planned[column].to_numpy() == train.loc[planned["source"], column].to_numpy()).all(), column
    assert planned["file"].is_unique
    assert all(f.startswith(f"aug-{p}-") and f.endswith(s)
               for f, p, s in zip(planned["file"], planned["purpose"], planned["source"]))
    assert set(planned["adjustment"]) <= set(ADJUSTMENTS)


def test_plan_spreads_copies_over_sources(split_table):
    train = split_table[split_table["split"] == "train"]
    planned = augment.plan(train, race_target=1.0, exact_age_target=0.0, seed=7)
    for race, copies in planned.groupby("race"):
        group = train[train["race"] == race]
        uses = copies["source"].value_counts().reindex(group["file"], fill_value=0)
        assert uses.max() - uses.min() <= 1, f"race {race}: sources are not cycled evenly"


def test_plan_is_seeded(split_table):
    train = split_table[split_table["split"] == "train"]
    first = augment.plan(train, 0.5, 0.3, seed=7)
    assert first.equals(augment.plan(train, 0.5, 0.3, seed=7))
    assert not first.equals(augment.plan(train, 0.5, 0.3, seed=8))


def test_plan_with_zero_targets_adds_nothing(split_table):
    train = split_table[split_table["split"] == "train"]
    assert len(augment.plan(train, 0.0, 0.0, seed=7)) == 0


@pytest.mark.parametrize("race_target, age_target", [(1.5, 0.1), (0.5, -0.1)])
def test_plan_rejects_targets_outside_0_1(split_table, race_target, age_target):
    with pytest.raises(ValueError):
        augment.plan(split_table[split_table["split"] == "train"], race_target, age_target, seed=7)


def test_summary_race_after_matches_the_plan(split_table):
    train = split_table[split_table["split"] == "train"]
    planned = augment.plan(train, 0.5, 0.1, seed=7)
    report = augment.summary(train, planned)
    target = math.ceil(0.5 * counts(train, "race").max())
    assert report["new_images"] == len(planned)
    assert all(after == max(report["race_before"][race], target) for race, after in report["race_after"].items())


# --- adjust ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def face(aligned_sample):
    table, folder = aligned_sample
    return cv2.imread(str(folder / table["file"].iloc[0]), cv2.IMREAD_COLOR)


@pytest.mark.parametrize("adjustment", ADJUSTMENTS)
def test_adjustments_keep_shape_and_dtype_and_change_the_image(face, adjustment):
    new = adjust(face, adjustment, np.random.default_rng(0), max_angle=10, noise_sigma=8)
    assert new.shape == face.shape and new.dtype == np.uint8
    assert not np.array_equal(new, face)


def test_flip_is_an_exact_mirror(face):
    flipped = adjust(face, "flip", np.random.default_rng(0), 10, 8)
    assert np.array_equal(flipped, face[:, ::-1])
    assert np.array_equal(adjust(flipped, "flip", np.random.default_rng(0), 10, 8), face)


def test_noise_flip_is_noise_then_mirror(face):
    noisy = adjust(face, "noise", np.random.default_rng(5), 10, 8)
    assert np.array_equal(adjust(face, "noise_flip", np.random.default_rng(5), 10, 8), noisy[:, ::-1])


def test_noise_has_the_asked_strength(face):
    noisy = adjust(face, "noise", np.random.default_rng(1), 10, 8)
    diff = noisy.astype(float) - face
    unclipped = (face > 40) & (face < 215)
    assert abs(diff[unclipped].std() - 8) < 1
    assert abs(diff[unclipped].mean()) < 0.5


def test_zero_angle_and_zero_noise_are_identities(face):
    assert np.array_equal(adjust(face, "rotate", np.random.default_rng(0), 0.0, 8), face)
    assert np.array_equal(adjust(face, "noise", np.random.default_rng(0), 10, 0.0), face)


def test_unknown_adjustment_raises(face):
    with pytest.raises(ValueError):
        adjust(face, "blur", np.random.default_rng(0), 10, 8)


# --- make_images -------------------------------------------------------------------------------------------

def written(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def plan_small(aligned_sample):
    table, _ = aligned_sample
    train = table[table["split"] == "train"]
    return train, augment.plan(train, race_target=1.0, exact_age_target=0.5, seed=7)


def test_make_images_is_byte_reproducible(aligned_sample, plan_small, tmp_path):
    _, folder = aligned_sample
    _, planned = plan_small
    assert len(planned) >= 10 and set(planned["adjustment"]) == set(ADJUSTMENTS)
    first, second, reverse = tmp_path / "1", tmp_path / "2", tmp_path / "3"
    for out, rows in ((first, planned), (second, planned), (reverse, planned.iloc[::-1])):
        out.mkdir()
        augment.make_images(rows, folder, out, max_angle=10, noise_sigma=8, jpeg_quality=95)
    assert sorted(written(first)) == sorted(planned["file"])
    assert written(first) == written(second)
    assert written(first) == written(reverse), "bytes must not depend on processing order"
    for name, data in written(first).items():
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        assert image.shape == (160, 160, 3), name


def test_make_images_other_seed_gives_other_images(aligned_sample, plan_small, tmp_path):
    train, planned = plan_small
    _, folder = aligned_sample
    other = augment.plan(train, race_target=1.0, exact_age_target=0.5, seed=8)
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    augment.make_images(planned, folder, tmp_path / "a", 10, 8)
    augment.make_images(other, folder, tmp_path / "b", 10, 8)
    a, b = written(tmp_path / "a"), written(tmp_path / "b")
    assert a != b
    assert set(a.values()) != set(b.values())


def test_make_images_seeds_matter_even_for_one_plan(aligned_sample, plan_small, tmp_path):
    """Same sources and adjustments, other per-image seeds: every rotated or noisy image changes."""
    _, folder = aligned_sample
    _, planned = plan_small
    reseeded = planned.assign(seed=planned["seed"] + 1)
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    augment.make_images(planned, folder, tmp_path / "a", 10, 8)
    augment.make_images(reseeded, folder, tmp_path / "b", 10, 8)
    a, b = written(tmp_path / "a"), written(tmp_path / "b")
    for row in planned.itertuples():
        if row.adjustment == "flip":
            assert a[row.file] == b[row.file]
        else:
            assert a[row.file] != b[row.file], row.file


def test_make_images_missing_source_raises(plan_small, tmp_path):
    _, planned = plan_small
    with pytest.raises(FileNotFoundError):
        augment.make_images(planned.head(1), tmp_path / "nowhere", tmp_path, 10, 8)


def test_make_images_refuses_a_truncated_source(aligned_sample, plan_small, tmp_path):
    """cv2.imread would decode a JPEG cut short with a grey lower part; the stage stops instead."""
    _, folder = aligned_sample
    _, planned = plan_small
    row = planned.iloc[0]
    cut = tmp_path / "aligned"
    cut.mkdir()
    data = (folder / row.source).read_bytes()
    (cut / row.source).write_bytes(data[:len(data) // 2])
    (tmp_path / "out").mkdir()
    with pytest.raises(FileNotFoundError, match="missing or unreadable"):
        augment.make_images(planned.head(1), cut, tmp_path / "out", 10, 8)
    assert not any((tmp_path / "out").iterdir())
