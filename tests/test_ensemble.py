"""argml.evaluation.ensemble on the session's pipeline run (conftest.pipeline_repo): real models, real cached faces."""

from __future__ import annotations

import json

import numpy as np
import pytest

from argml.core.labels import AgeMode
from argml.data import tfrecords
from argml.evaluation import ensemble
from argml.model import features
from argml.serving.classifier import Classifier
from conftest import cache_tolerance

pytestmark = pytest.mark.slow
MODES = ("binned", "exact")


def test_each_model_gets_the_validation_figures_its_training_recorded(pipeline_repo):
    copy, _, _ = pipeline_repo
    cache = copy / "data" / "features"
    split = features.load_split(cache, "val", AgeMode.of("binned"))
    for mode in MODES:
        answer = ensemble.cached_probabilities(copy / "data" / "models" / mode, split,
                                               features.read_info(cache).from_block)
        recorded = json.loads((copy / "reports" / mode / "validation.json").read_text())["metrics"]
        measured = ensemble.figures(answer, split["labels"])
        for name, key in (("gender", "gender.accuracy"), ("race", "race.accuracy"), ("CS@5", "age.cs5")):
            assert measured[name] == pytest.approx(100 * recorded[key], abs=0.01), (mode, name)
        assert measured["MAE"] == pytest.approx(recorded["age.mae"], abs=1e-3), mode
        np.testing.assert_allclose(answer["bins"].sum(axis=1), 1, atol=1e-4)


def test_the_ensemble_is_the_mean_of_its_models(pipeline_repo):
    copy, _, _ = pipeline_repo
    cache = copy / "data" / "features"
    split = features.load_split(cache, "val", AgeMode.of("binned"))
    from_block = features.read_info(cache).from_block
    answers = [ensemble.cached_probabilities(copy / "data" / "models" / mode, split, from_block) for mode in MODES]
    both = ensemble.averaged(answers)
    for key in ("gender", "race", "bins", "years"):
        np.testing.assert_allclose(both[key], (answers[0][key] + answers[1][key]) / 2)
    assert answers[0]["bins"].shape == answers[1]["bins"].shape == (len(split["index"]), 9)


def test_flip_averaging_is_the_mean_of_the_model_on_each_face_and_its_mirror(pipeline_repo):
    copy, _, _ = pipeline_repo
    cache, records = copy / "data" / "features", copy / "data" / "tfrecords"
    model_dir = copy / "data" / "models" / "binned"
    split = features.load_split(cache, "val", AgeMode.of("binned"))
    mirrored = ensemble.mirrored_block_inputs(model_dir, records, "val")
    assert mirrored.shape == split["lower"].shape and mirrored.dtype == np.float16
    flipped = ensemble.cached_probabilities(model_dir, split, features.read_info(cache).from_block,
                                            mirrored=mirrored)
    plain = ensemble.cached_probabilities(model_dir, split, features.read_info(cache).from_block)

    images, _ = next(tfrecords.load_dataset(records, "val", mode=AgeMode.of("binned"), batch_size=16,
                                            shuffle=False).as_numpy_iterator())
    classifier = Classifier(model_dir / "model.keras")
    both = [classifier.probabilities(images), classifier.probabilities(images[:, :, ::-1])]
    rows = np.flatnonzero(np.isin(split["index"], np.arange(len(images))))  # the batch's faces, cache order
    assert len(rows) == len(images) > 1
    for task in ("gender", "race"):
        expected = (both[0][task] + both[1][task]) / 2
        np.testing.assert_allclose(flipped[task][rows], expected, atol=cache_tolerance(cache))
        assert not np.allclose(plain[task][rows], both[1][task], atol=2e-3), task  # the mirror differs


def test_the_command_reports_flipped_figures(pipeline_repo, tmp_path, capsys):
    copy, _, _ = pipeline_repo
    models = [str(copy / "data" / "models" / mode) for mode in MODES]
    assert ensemble.main([*models, "--features", str(copy / "data" / "features"), "--flip",
                          "--tfrecords", str(copy / "data" / "tfrecords")]) == 0
    printed = capsys.readouterr().out
    assert printed.count(" + flip: gender ") == 3  # both models and their ensemble
    assert ensemble.main([models[0], "--features", str(copy / "data" / "features"), "--flip",
                          "--tfrecords", str(tmp_path)]) == 2
    assert "run `dvc repro tfrecords` first" in capsys.readouterr().err


def test_a_model_from_another_block_is_refused(pipeline_repo):
    copy, _, _ = pipeline_repo
    split = features.load_split(copy / "data" / "features", "val", AgeMode.of("binned"))
    with pytest.raises(ValueError, match="rebuild the cache"):
        ensemble.cached_probabilities(copy / "data" / "models" / "binned", split, "Repeat_1.block17_9")


def test_a_missing_cache_or_model_is_a_clear_error(pipeline_repo, tmp_path, capsys):
    copy, _, _ = pipeline_repo
    assert ensemble.main([str(copy / "data" / "models" / "binned"), "--features", str(tmp_path)]) == 2
    assert "run `dvc repro features` first" in capsys.readouterr().err
    assert ensemble.main([str(tmp_path / "no-model"), "--features", str(copy / "data" / "features")]) == 2
    assert "no-model" in capsys.readouterr().err
