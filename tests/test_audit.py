"""argml.audit without a trained model: the quantification methods, the inputs an audit reads, its shard
store and its report. (The whole audit, on real faces, in-process and on a two-node cluster, is in
tests/test_audit_cluster.py.)"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from argml.audit import answers, quantify, report, sources
from argml.audit.quantify import Answers
from tests.conftest import make_card


def answers_with_rates(true_counts, rates, classes) -> Answers:
    """Faces whose predictions follow `rates` (rates[i, j] = share of true class j predicted i) exactly."""
    true, predicted = [], []
    for j, count in enumerate(true_counts):
        per_prediction = np.round(np.asarray(rates)[:, j] * count).astype(int)
        for i, n in enumerate(per_prediction):
            true += [j] * n
            predicted += [i] * n
    predicted = np.array(predicted)
    return Answers(predicted, np.eye(classes)[predicted] * 0.8 + 0.2 / classes, np.array(true))


RATES = np.array([[0.8, 0.3, 0.1],   # rows: predicted; columns: true
                  [0.1, 0.6, 0.2],
                  [0.1, 0.1, 0.7]])


def test_acc_recovers_the_true_shares_when_the_errors_are_the_validation_errors():
    validation = answers_with_rates([1000, 1000, 1000], RATES, 3)
    collection = answers_with_rates([1400, 400, 200], RATES, 3)
    truth = np.array([0.7, 0.2, 0.1])
    raw = quantify.estimate("cc", collection, None)[0]
    corrected = quantify.estimate("acc", collection, validation)[0]
    assert np.abs(raw - truth).max() > 0.05  # counting the labels is off by points
    np.testing.assert_allclose(corrected, truth, atol=1e-9)


def test_a_class_without_validation_faces_is_left_unadjusted():
    validation = answers_with_rates([1000, 1000, 0], RATES, 3)
    rates = quantify._rates(np.ones((1, len(validation))), np.eye(3)[validation.predicted], validation.true, 3)[0]
    np.testing.assert_allclose(rates[:, 2], [0, 0, 1])
    np.testing.assert_allclose(rates[:, 0], RATES[:, 0], atol=1e-9)


def test_adjusted_shares_are_clipped_to_the_simplex():
    validation = answers_with_rates([1000, 1000, 1000], RATES, 3)
    collection = answers_with_rates([0, 0, 100], np.eye(3), 3)  # predicted only as class 2: below ACC's range
    shares = quantify.estimate("acc", collection, validation)[0]
    assert shares.min() >= 0 and shares.sum() == pytest.approx(1)


def test_em_reaches_a_fixed_point_and_pcc_is_the_mean_distribution():
    rng = np.random.default_rng(1)
    probabilities = rng.dirichlet([1, 1, 1], 400)
    collection = Answers(probabilities.argmax(1), probabilities)
    validation = Answers(probabilities.argmax(1), probabilities, rng.integers(0, 3, 400))
    np.testing.assert_allclose(quantify.estimate("pcc", collection, None)[0], probabilities.mean(0))
    shares = quantify.estimate("em", collection, validation)[0]
    prior = validation.probabilities.mean(0)
    adjusted = probabilities * shares / prior
    adjusted /= adjusted.sum(1, keepdims=True)
    np.testing.assert_allclose(adjusted.mean(0), shares, atol=quantify.EM_TOLERANCE * 20)


def test_weights_of_ones_are_the_point_estimate_and_weights_resample():
    validation = answers_with_rates([300, 300, 300], RATES, 3)
    collection = answers_with_rates([140, 40, 20], RATES, 3)
    for method in quantify.METHODS:
        once = quantify.estimate(method, collection, validation)
        batched = quantify.estimate(method, collection, validation, np.ones((3, len(collection))),
                                    np.ones((3, len(validation))))
        np.testing.assert_allclose(batched, np.repeat(once, 3, axis=0), atol=1e-9)
    weights = quantify.resampling_weights(50, 4, np.random.default_rng(0))
    assert weights.shape == (4, 50) and (weights.sum(1) == 50).all()


def test_intervals_include_the_uncertainty_of_the_confusion_matrices():
    """Fewer validation faces, same collection: the corrected interval widens; the raw one cannot know."""
    collection = answers_with_rates([1400, 400, 200], RATES, 3)
    small = answers_with_rates([40, 40, 40], RATES, 3)
    large = answers_with_rates([4000, 4000, 4000], RATES, 3)
    narrow = quantify.shares("acc", collection, large, rounds=300, seed=0)
    wide = quantify.shares("acc", collection, small, rounds=300, seed=0)
    assert ((wide.high - wide.low) > 1.5 * (narrow.high - narrow.low)).all()
    assert (narrow.low <= narrow.point).all() and (narrow.point <= narrow.high).all()
    again = quantify.shares("acc", collection, small, rounds=300, seed=0)
    np.testing.assert_array_equal(again.low, wide.low)  # seeded: the same report on a rerun


def test_an_unknown_method_and_a_correction_without_labels_are_refused():
    collection = answers_with_rates([10, 10, 10], RATES, 3)
    with pytest.raises(ValueError, match="unknown quantification method"):
        quantify.estimate("median", collection, None)
    with pytest.raises(ValueError, match="labelled validation"):
        quantify.estimate("acc", collection, None)


def test_exact_mode_answers_are_read_in_the_nine_bins():
    card = make_card("exact")
    probabilities = {"gender": np.array([[0.2, 0.8]]), "race": np.array([[0.1, 0.6, 0.1, 0.1, 0.1]]),
                     "age": np.eye(63)[[29]]}  # class 29 = age 30: the bin 27-34
    read = answers.from_probabilities(probabilities, card)
    assert read["age"].probabilities.shape == (1, 9) and read["age"].predicted[0] == 4
    assert read["race"].predicted[0] == 1 and read["gender"].predicted[0] == 1


def test_validation_answers_of_another_model_are_refused(tmp_path):
    path = tmp_path / "validation.npz"
    np.savez(path, probabilities_gender=np.zeros((2, 2)), probabilities_race=np.zeros((2, 5)),
             probabilities_age=np.zeros((2, 9)), true_gender=np.zeros(2, int), true_race=np.zeros(2, int),
             true_age_bin=np.zeros(2, int))
    assert len(answers.load_labelled(path, make_card("binned"))["race"]) == 2
    with pytest.raises(ValueError, match="another model"):
        answers.load_labelled(path, make_card("exact"))
    with pytest.raises(FileNotFoundError, match="argml.audit.labelled"):
        answers.load_labelled(tmp_path / "none.npz", make_card("binned"))


# --- inputs ------------------------------------------------------------------------------------------------

def test_folders_lists_and_manifests_name_the_photos(tmp_path, monkeypatch):
    photos = tmp_path / "photos"
    (photos / "deeper").mkdir(parents=True)
    for name in ("b.jpg", "a.PNG", "notes.txt", "deeper/c.jpeg"):
        (photos / name).write_bytes(b"x")
    (tmp_path / "list.txt").write_text("# a comment\nphotos/b.jpg\n\n/elsewhere/missing.jpg\n")
    pd.DataFrame({"uri": ["photos/a.PNG", "file://" + str(photos / "deeper/c.jpeg")]}).to_parquet(tmp_path / "m.parquet")
    pd.DataFrame({"path": ["photos/b.jpg"]}).to_csv(tmp_path / "m.csv", index=False)
    monkeypatch.chdir(tmp_path)
    inputs = sources.collect(["photos", "list.txt", "m.parquet", "m.csv", str(photos / "b.jpg")])
    assert inputs.entries == [str(photos / "a.PNG"), str(photos / "b.jpg"), str(photos / "deeper/c.jpeg"),
                              "/elsewhere/missing.jpg"]
    assert inputs.duplicates == 5  # b.jpg three more times, a.PNG and c.jpeg once more


def test_a_missing_path_argument_or_a_manifest_without_paths_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        sources.collect([str(tmp_path / "nowhere")])
    pd.DataFrame({"name": ["x.jpg"]}).to_csv(tmp_path / "m.csv", index=False)
    with pytest.raises(ValueError, match="none of the columns path, uri, file"):
        sources.collect([str(tmp_path / "m.csv")])
    (tmp_path / "notes.md").write_text("x")
    with pytest.raises(ValueError, match="not a folder, a list"):
        sources.collect([str(tmp_path / "notes.md")])


def test_reading_applies_the_decode_limits_to_paths_and_uris(utkface_dir, tmp_path):
    from argml.core import images

    real = sorted(utkface_dir.iterdir())[0]
    assert sources.read(str(real), images.Limits()).shape == (200, 200, 3)
    assert sources.read(real.as_uri(), images.Limits()).shape == (200, 200, 3)
    with pytest.raises(images.ImageError, match="over the limit"):
        sources.read(real.as_uri(), images.Limits(max_bytes=100))
    with pytest.raises(images.ImageError, match="pixels is over the limit"):
        sources.read(real.as_uri(), images.Limits(max_pixels=100 * 100))
    with pytest.raises(images.ImageError, match="cannot be read"):
        sources.read((tmp_path / "gone.jpg").as_uri(), images.Limits())


# --- the store ----------------------------------------------------------------------------------------------

def _settings(**changes):
    from argml.audit.worker import AuditSettings

    return AuditSettings(**{"model": "models:/argml/1", "backend": "litert", "detector": "/d.tflite",
                            "detector_sha256": "ab", **changes})


def _result(index: int, files: list[str]):
    from argml.audit.worker import FACES_SCHEMA, PHOTOS_SCHEMA, ShardResult

    photos = pa.Table.from_pandas(pd.DataFrame({"file": files, "status": "no_face", "faces": 0, "problem": ""}),
                                  schema=PHOTOS_SCHEMA, preserve_index=False)
    return ShardResult(index, FACES_SCHEMA.empty_table(), photos)


def test_a_shard_is_written_once_and_a_rerun_of_another_plan_is_refused(tmp_path):
    from argml.audit.store import AuditFolder, Plan

    plan = Plan([f"/p/{n}.jpg" for n in range(5)], 0, 2, _settings())
    folder = AuditFolder(tmp_path / "audit")
    folder.prepare(plan)
    assert plan.shard_count == 3 and folder.pending(plan) == [0, 1, 2]
    assert folder.write_shard(_result(1, plan.shard(1)))
    assert not folder.write_shard(_result(1, ["/p/other.jpg"]))  # a retried shard's second result
    assert folder.pending(plan) == [0, 2]
    folder.prepare(plan)  # the same plan: resumes
    for index in (0, 2):
        folder.write_shard(_result(index, plan.shard(index)))
    faces, photos = folder.assemble(plan)
    assert pd.read_parquet(photos)["file"].tolist() == plan.entries and len(pd.read_parquet(faces)) == 0
    with pytest.raises(ValueError, match="settings.model"):
        folder.prepare(Plan(plan.entries, 0, 2, _settings(model="models:/argml/2")))
    with pytest.raises(ValueError, match="inputs_sha256"):
        folder.prepare(Plan(plan.entries[:4], 0, 2, _settings()))
    assert not list((tmp_path / "audit" / "shards").glob(".*"))  # no staging file left behind


# --- the report ------------------------------------------------------------------------------------------------

def test_the_report_counts_photos_and_lists_the_unreadable(tmp_path):
    photos = pd.DataFrame({"file": ["a", "b", "c", "d", "e"],
                           "status": ["faces", "faces", "no_face", "unreadable", "faces"],
                           "faces": [1, 3, 0, 0, 2], "problem": ["", "", "", "d: truncated JPEG", ""]})
    counts = report.photo_counts(photos, duplicates=2)
    assert counts == {"inputs": 5, "duplicates_skipped": 2, "with_faces": 3, "without_face": 1, "unreadable": 1,
                      "faces": 6, "faces_per_photo": {"0": 1, "1": 1, "2": 1, "3+": 1},
                      "mean_faces_per_photo_with_faces": 2.0}
    card = make_card("binned")
    rng = np.random.default_rng(0)
    faces = pd.DataFrame({
        "gender": rng.choice(["male", "female"], 6), "race": rng.choice(["White", "Black"], 6),
        "age_bin": rng.choice(["20-26", "62+"], 6),
        "gender_probabilities": list(rng.dirichlet([1, 1], 6)), "race_probabilities": list(rng.dirichlet([1] * 5, 6)),
        "age_probabilities": list(rng.dirichlet([1] * 9, 6))})
    validation = answers.from_probabilities(
        {"gender": rng.dirichlet([1, 1], 50), "race": rng.dirichlet([1] * 5, 50), "age": rng.dirichlet([1] * 9, 50)},
        card, {"gender": rng.integers(0, 2, 50), "race": rng.integers(0, 5, 50), "age": rng.integers(0, 9, 50)})
    document = report.build(faces, photos, card, validation, report.Settings(rounds=20), {"uri": "models:/argml/1"}, 2)
    assert document["unreadable"] == [{"file": "d", "reason": "d: truncated JPEG"}]
    raw = document["shares"]["gender"]["raw"]
    assert raw["female"]["share"] == pytest.approx((faces["gender"] == "female").mean(), abs=1e-4)
    assert set(document["shares"]["age"]["corrected"]) == set(answers.audit_classes()["age"])
    paths = report.write(document, tmp_path)
    assert json.loads(paths[0].read_text()) == json.loads(json.dumps(document))
    text = paths[1].read_text()
    assert "appearance-based categories" in text and "d: truncated JPEG" in text
    assert paths[2].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
