"""argml.serving.inference on its own: a small real Keras model with argml's heads and model.json, real UTKFace faces
aligned by dlib, no detector and no registry."""

from __future__ import annotations

import json
import os

from argml.serving import inference  # first: the import order of torchvision and TensorFlow

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from argml.data.faces import FaceAligner, decode_image  # noqa: E402
from conftest import make_card  # noqa: E402

SIZE = 160
BOX = (20, 20, 180, 180)  # UTKFace's faces fill the middle of the 200x200 image


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """model.keras: image -> pooled colour -> argml's three heads; model.json as train writes it."""
    import keras

    from argml.core.labels import AgeMode
    from argml.model.heads import build_heads

    keras.utils.set_random_seed(0)
    image = keras.Input((SIZE, SIZE, 3), name="image")
    pooled = keras.layers.GlobalAveragePooling2D()(keras.layers.Rescaling(1 / 255)(image))
    model = keras.Model(image, build_heads(3, AgeMode.of("binned"), hidden_units=8)(pooled))
    folder = tmp_path_factory.mktemp("model")
    model.save(folder / "model.keras")
    make_card("binned", [3.0, 9.0, 16.0, 23.0, 30.5, 38.5, 46.0, 55.5, 70.0], padding=0.4).save(folder / "model.json")
    return folder


@pytest.fixture(scope="module")
def images(utkface_dir):
    names = sorted(os.listdir(utkface_dir))[100:103]
    return [decode_image((utkface_dir / name).read_bytes()).rgb for name in names]


def test_faces_are_aligned_as_recorded_and_classified_as_one_batch(model_dir, images):
    classifier = inference.FaceClassifier(model_dir / "model.keras")
    assert classifier.aligner.padding == 0.4  # model.json's value, not the default 0.25
    boxes = [BOX, (30, 10, 190, 170)]
    answers = classifier.probabilities(images[0], boxes)
    assert len(answers) == 2 and set(answers[0]) == {"gender", "race", "age"}
    for answer in answers:
        assert all(abs(float(p.sum()) - 1) < 1e-5 for p in answer.values())

    aligned = FaceAligner(SIZE, padding=0.4).align(images[0], BOX)
    np.testing.assert_array_equal(classifier.align(images[0], [BOX])[0], aligned)
    direct = classifier.classifier.probabilities(aligned[None])
    np.testing.assert_allclose(answers[0]["race"], direct["race"][0], atol=1e-6)

    table = classifier.predict(images[1], [BOX])
    assert len(table) == 1 and table.loc[0, "gender"] in ("male", "female")
    # The card's read-out is the mean: the bins' probabilities weighting the ages model.json records.
    ages = [3.0, 9.0, 16.0, 23.0, 30.5, 38.5, 46.0, 55.5, 70.0]
    expected = float(np.dot(classifier.probabilities(images[1], [BOX])[0]["age"], ages))
    assert table.loc[0, "age_years"] == pytest.approx(expected, abs=1e-4)
    assert classifier.probabilities(images[2], []) == [] and classifier.predict(images[2], []).empty


def test_a_model_without_a_recorded_alignment_is_refused(model_dir, tmp_path):
    description = json.loads((model_dir / "model.json").read_text())
    del description["align"]
    (tmp_path / "model.keras").write_bytes((model_dir / "model.keras").read_bytes())
    (tmp_path / "model.json").write_text(json.dumps(description))
    with pytest.raises(ValueError, match="records no alignment"):
        inference.FaceClassifier(tmp_path / "model.keras")


def test_model_sources():
    assert inference.is_registry_uri("models:/argml@champion") and inference.is_registry_uri("runs:/abc/model")
    assert not inference.is_registry_uri("data/models/binned/model.keras")
    with pytest.raises(FileNotFoundError):
        inference.load_classifier("no/such/model.keras")


def test_settings_fall_back_to_defaults_outside_the_repository(tmp_path):
    assert inference.settings(tmp_path / "params.yaml").forget_after == 15


def test_the_pool_says_who_is_due_for_classification():
    from argml.live.pooling import TrackPools

    pools = TrackPools(forget_after=2)
    pools.seen([1, 2], 0)
    assert pools.due([1, 2, 3], now=10.0, interval=0.25) == [1, 2]  # 3 was never seen
    pools.submitted([1], 10.0)
    assert pools.due([1, 2], now=10.1, interval=0.25) == [2]
    assert pools.due([1, 2], now=10.3, interval=0.25) == [1, 2]
    assert pools.due([1], now=10.1, interval=0) == [1]
    pools.seen([2], 5)  # 1 has left: its pool, and its last request, are gone
    pools.seen([1], 6)
    assert pools.due([1], now=10.1, interval=0.25) == [1]


@pytest.fixture(scope="module")
def exports(model_dir):
    from argml.serving import convert

    return {kind: convert.export(model_dir / "model.keras", model_dir / convert.export_name(kind), kind)
            for kind in convert.KINDS}


def test_litert_exports_answer_like_keras(model_dir, exports, images):
    from argml.serving import litert

    classifier = inference.FaceClassifier(model_dir / "model.keras")
    faces = np.stack([classifier.align(image, [BOX])[0] for image in images])
    keras_answers = classifier.classifier.probabilities(faces)
    for kind, path in exports.items():
        lite = litert.LiteClassifier(path, threads=1)
        assert lite.card == classifier.card  # model.json beside the export
        answers = lite.probabilities(faces)
        for task in ("gender", "race", "age"):
            np.testing.assert_allclose(answers[task], keras_answers[task], atol=1e-5 if kind == "fp32" else 0.05)
        assert lite.predict(faces[:1]).loc[0, "gender"] in ("male", "female")
        assert len(lite.probabilities(faces[:1])["race"]) == 1  # batch sizes may change between calls


def test_a_changed_export_is_refused(exports, tmp_path):
    from argml.core.files import file_digest
    from argml.serving import litert

    digest = file_digest(exports["int8"], "sha256")
    litert.LiteClassifier(exports["int8"], sha256=digest)
    damaged = tmp_path / "model.int8.tflite"
    damaged.write_bytes(exports["int8"].read_bytes()[:-1] + b"\0")
    (tmp_path / "model.json").write_text(exports["int8"].with_name("model.json").read_text())
    with pytest.raises(ValueError, match="sha256"):
        litert.LiteClassifier(damaged, sha256=digest)


def test_backends_are_chosen_by_what_the_model_is(model_dir, exports):
    assert inference.choose_backend(exports["int8"]) == "litert"
    assert inference.choose_backend(model_dir / "model.keras") == "keras"
    assert inference.choose_backend(model_dir / "model.keras", "litert") == "litert"
    with pytest.raises(ValueError, match="backend must be one of"):
        inference.choose_backend(model_dir / "model.keras", "onnx")
    with pytest.raises(ValueError, match="use --backend litert"):
        inference.load_classifier(exports["int8"], "keras")
    with pytest.raises(ValueError, match="needs a models:/ URI or a .tflite export"):
        inference.load_classifier(model_dir / "model.keras", "litert")
    assert type(inference.load_classifier(exports["fp32"], "auto")).__name__ == "LiteClassifier"


def test_tolerance_counts_losses_not_gains():
    from argml.evaluation import exports as litert

    delta = {"gender.accuracy": -0.004, "race.accuracy": 0.02, "age.accuracy": 0.0, "age.bin_accuracy": -0.001,
             "age.mae": 0.05}
    assert litert.within_tolerance(delta, accuracy_points=0.5, mae_years=0.1)
    assert not litert.within_tolerance({**delta, "race.accuracy": -0.006}, 0.5, 0.1)
    assert not litert.within_tolerance({**delta, "age.mae": 0.11}, 0.5, 0.1)
    assert litert.within_tolerance({**delta, "age.mae": -1.0}, 0.5, 0.1)


def test_the_photo_model_decodes_or_explains():
    import base64

    import cv2

    from argml.serving import photos

    image = np.zeros((40, 30, 3), np.uint8)
    encoded = base64.b64encode(cv2.imencode(".png", image)[1].tobytes()).decode()
    assert photos.decode(encoded).shape == (40, 30, 3)
    for bad, message in (("", "no image"), ("not base64!", "not valid base64"),
                         (base64.b64encode(b"hello").decode(), "not a readable")):
        with pytest.raises(ValueError, match=message):
            photos.decode(bad)
