"""train.multi_level on the session's pipeline run (conftest.pipeline_repo): real cached faces, a real model."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from argml.core.config import load_params
from argml.core.labels import AgeMode
from argml.data import tfrecords
from argml.model import batches, features, train
from argml.serving.classifier import Classifier
from conftest import cache_tolerance

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def multi_level_model(pipeline_repo, tmp_path_factory):
    """A binned model with multi-level heads, trained on the pipeline's cache; no fine-tuning, so its top
    features are still the cached ones."""
    copy, _, _ = pipeline_repo
    scratch = tmp_path_factory.mktemp("multi_level")
    settings = dataclasses.replace(load_params(copy / "params.yaml").train, multi_level=True, head_epochs=2,
                                   finetune_epochs=0)
    train.train(copy / "data" / "features", scratch / "model", AgeMode.of("binned"), settings,
                checkpoint_dir=scratch / "checkpoints", log_dir=scratch / "logs")
    return scratch / "model"


def test_the_heads_see_the_top_features_then_the_pooled_block_input(pipeline_repo, multi_level_model):
    copy, _, _ = pipeline_repo
    split = features.load_split(copy / "data" / "features", "val", AgeMode.of("binned"))
    classifier = Classifier(multi_level_model / "model.keras")
    assert classifier.card.multi_level is True
    trunk = classifier.model.layers[2]  # image -> lower -> trunk -> heads (argml.model.train)
    seen = np.asarray(trunk.predict(split["lower"][split["index"]].astype(np.float32), verbose=0))
    cached = np.concatenate([split["head"], batches.pooled_block_inputs(split, chunk=4)], axis=1)
    assert seen.shape == cached.shape == (len(split["index"]), 1792 + 896)
    np.testing.assert_allclose(seen, cached, atol=0.02, rtol=0.02)  # the cache holds float16 block inputs


def test_the_saved_model_answers_images_as_the_cache_does(pipeline_repo, multi_level_model):
    copy, _, _ = pipeline_repo
    images, targets = next(tfrecords.load_dataset(copy / "data" / "tfrecords", "val", mode=AgeMode.of("binned"),
                                                  batch_size=16, shuffle=False).as_numpy_iterator())
    classifier = Classifier(multi_level_model / "model.keras")
    split = features.load_split(copy / "data" / "features", "val", AgeMode.of("binned"))
    block_input = split["lower"][split["index"][:len(images)]].astype(np.float32)
    from_cache = classifier.model.layers[3](classifier.model.layers[2](block_input))
    from_images = classifier.probabilities(images)
    for task in ("gender", "race", "age"):
        np.testing.assert_allclose(from_images[task], np.asarray(from_cache[task]),
                                   atol=cache_tolerance(copy / "data" / "features"))
    recorded = json.loads((multi_level_model / "model.json").read_text())
    assert recorded["from_block"] == features.read_info(copy / "data" / "features").from_block
    assert np.array_equal(targets["gender"], split["labels"]["gender"][:len(images)])
