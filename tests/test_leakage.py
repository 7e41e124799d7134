"""The near-duplicate audit on real faces and the real FaceNet."""

import cv2
import numpy as np
import pandas as pd
import pytest

from argml.core.labels import VARIANTS
from argml.data import augment
from argml.evaluation import leakage
from argml.evaluation import metrics as evaluate
from argml.model import facenet
from conftest import make_card


@pytest.fixture(scope="module")
def embeddings_of(aligned_sample):
    """Unit-length FaceNet embeddings of 8 real aligned faces and of an augmented copy of each."""
    table, _ = aligned_sample
    rows = table.head(8)
    model = facenet.feature_model(facenet.load_facenet(), "embeddings")
    rng = np.random.default_rng(0)
    originals = np.stack([cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB) for path in rows["path"]])
    adjustments = ["rotate", "flip", "noise", "noise_flip"] * 2
    copies = np.stack([augment.adjust(face, how, rng, max_angle=15, noise_sigma=8)
                       for face, how in zip(originals, adjustments)])
    return rows["file"].tolist(), model.predict_on_batch(originals), model.predict_on_batch(copies)


def test_an_augmented_copy_finds_its_own_source(embeddings_of):
    names, originals, copies = embeddings_of
    cosine, row = leakage.nearest(copies, originals, chunk=3)  # chunks smaller than the queries
    assert row.tolist() == list(range(len(names)))
    others = originals @ originals.T
    np.fill_diagonal(others, -1)
    assert cosine.min() > others.max()  # closer to its source than any two different photos here
    assert np.allclose(cosine, np.einsum("ij,ij->i", copies, originals), atol=1e-5)


def test_copy_cosines_pair_each_copy_with_its_source(embeddings_of):
    names, originals, copies = embeddings_of
    copy_names = [f"aug-race-{i:05d}-{name}" for i, name in enumerate(names)]
    file_names = np.array(names + copy_names)
    variants = np.array([VARIANTS["original"]] * len(names) + [VARIANTS["race"]] * len(names))
    shuffled = np.random.default_rng(1).permutation(len(file_names))
    to_source = leakage.copy_cosines(np.vstack([originals, copies])[shuffled], file_names[shuffled],
                                     variants[shuffled])
    expected = np.einsum("ij,ij->i", copies, originals)
    assert sorted(np.round(to_source, 5)) == sorted(np.round(expected, 5))
    assert augment.copy_source(copy_names[0]) == names[0]
    with pytest.raises(ValueError, match="not an augmented copy"):
        augment.copy_source(names[0])


def test_threshold_is_the_quantile_and_needs_copies():
    assert leakage.twin_threshold(np.array([0.8, 0.9, 0.95, 1.0]), 0.0) == pytest.approx(0.8)
    assert leakage.twin_threshold(np.linspace(0, 1, 101), 0.05) == pytest.approx(0.05)
    with pytest.raises(ValueError, match="no augmented copies"):
        leakage.twin_threshold(np.array([]), 0.05)


def _predictions(files, right):
    """Binned-mode rows where the faces in `right` get every task right and the others every task wrong."""
    n = len(files)
    truth = {"gender": np.zeros(n, int), "race": np.zeros(n, int), "age": np.full(n, 3)}
    probabilities = {task: np.full((n, k), 0.01) for task, k in (("gender", 2), ("race", 5), ("age", 9))}
    for task, values in probabilities.items():
        for i, name in enumerate(files):
            values[i, truth[task][i] if name in right else 1] = 1.0
    labels = {**truth, "file": np.array(files), "age_years": np.full(n, 23), "age_bin": np.full(n, 3),
              "age_class": np.full(n, 22)}
    age_values = [3, 9, 16, 23, 30, 38, 46, 55, 70]
    return evaluate.row_outcomes(probabilities, labels, make_card("binned", age_values))


def test_the_audit_counts_twins_and_splits_the_metrics():
    files = [f"{i}_0_0_x.jpg" for i in range(10)]
    neighbours = pd.DataFrame({"file": files, "race": ["White"] * 6 + ["Black"] * 4,
                               "nearest_train_file": ["t.jpg"] * 10,
                               "cosine": [0.99, 0.97, 0.5, 0.4, 0.3, 0.2, 0.96, 0.1, 0.1, 0.1]})
    for key in leakage.LABEL_KEYS:
        neighbours[f"{key}_test"] = neighbours[f"{key}_train"] = 1
    neighbours.loc[0, "age_years_train"] = 9  # twin 0: 8 years apart, so another age bin
    neighbours.loc[0, "age_bin_train"] = 2
    neighbours.loc[1, "gender_train"] = 0
    twins = {"0_0_0_x.jpg", "1_0_0_x.jpg", "6_0_0_x.jpg"}
    report, marked = leakage.audit(neighbours, np.linspace(0.95, 1.0, 21), 0.0, {"binned": _predictions(files, twins)})
    assert report["threshold"]["cosine"] == pytest.approx(0.95)
    assert report["near_twins"] == 3 and report["near_twin_fraction"] == pytest.approx(0.3)
    assert set(marked.loc[marked["near_twin"], "file"]) == twins
    assert report["near_twins_per_race"] == {"Black": {"near_twins": 1, "faces": 4},
                                             "White": {"near_twins": 2, "faces": 6}}
    assert report["near_twin_label_agreement"] == {"gender": round(2 / 3, 4), "race": 1.0, "age_bin": round(2 / 3, 4),
                                                   "age_within_5_years": round(2 / 3, 4)}
    metrics = report["metrics"]["binned"]
    assert metrics["twins_only"]["faces"] == 3 and metrics["twins_only"]["gender.accuracy"] == 1.0
    assert metrics["without_twins"]["faces"] == 7 and metrics["without_twins"]["race.accuracy"] == 0.0
    assert metrics["all"]["age.bin_accuracy"] == pytest.approx(0.3)


def test_contact_sheet_shows_the_chosen_pairs(aligned_sample, tmp_path):
    table, aligned_dir = aligned_sample
    files = table["file"].tolist()
    neighbours = pd.DataFrame({"file": files[:10], "race": "White", "nearest_train_file": files[10:20],
                               "cosine": np.linspace(0.99, 0.5, 10)})
    pairs = leakage.sheet_examples(neighbours.assign(near_twin=neighbours["cosine"] >= 0.8), per_side=2)
    assert pairs["cosine"].tolist()[:4] == sorted(neighbours["cosine"], reverse=True)[:4]
    assert (pairs["cosine"] < 0.8).sum() == 2 and pairs["file"].is_unique
    leakage.contact_sheet(pairs, aligned_dir, tmp_path / "sheet.png", size=64)
    sheet = cv2.imread(str(tmp_path / "sheet.png"))
    rows = -(-len(pairs) // 4)
    assert sheet.shape == (rows * (64 + 18), 4 * 2 * 64, 3)
    with pytest.raises(FileNotFoundError, match="missing or unreadable"):
        leakage.contact_sheet(pairs.assign(nearest_train_file="absent.jpg"), aligned_dir, tmp_path / "x.png")
