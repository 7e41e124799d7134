"""Bad input by the hundred (Hypothesis) at the entry points: JSON bodies to both served models, through MLflow's
own scoring server (the app `mlflow models serve` runs, here in process), and image folders to argml.predict.

The models are small but real: a Keras model with argml's heads and model card, logged and registered by
argml's own code (pyfunc.log_model, photos.log_photo_model) in a temporary MLflow store, with the real YOLO
face detector inside the photo model. Every body gets an answer or a 4xx naming the problem, never a 5xx;
every bad image gets its own error row. Sizes and the longer run: tests/fuzzing.py."""

from __future__ import annotations

import base64
import json
import math
import os
from pathlib import Path

from argml.serving import inference  # noqa: F401  (first: the import order of torchvision and TensorFlow)

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hypothesis import given, strategies as st  # noqa: E402

from argml.core import images  # noqa: E402
from conftest import make_card  # noqa: E402
from fuzzing import bad_images, examples, peak_rss, reset_peak_rss, valid_images  # noqa: E402

SIZE = 160
LIMITS = images.Limits(max_pixels=1_000_000, max_bytes=1 << 20)
pytestmark = pytest.mark.slow  # each test starts MLflow's scoring app or predict with TensorFlow, torch and YOLO


@pytest.fixture(scope="module")
def detector() -> str:
    path = os.environ.get("ARGML_YOLO_FACE", "")
    if not Path(path).is_file():
        pytest.skip("ARGML_YOLO_FACE is not set to the YOLO face model")
    return path


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    import keras

    from argml.core.labels import AgeMode
    from argml.model.heads import build_heads

    keras.utils.set_random_seed(0)
    image = keras.Input((SIZE, SIZE, 3), name="image")
    pooled = keras.layers.GlobalAveragePooling2D()(keras.layers.Rescaling(1 / 255)(image))
    model = keras.Model(image, build_heads(3, AgeMode.of("binned"), hidden_units=8)(pooled))
    folder = tmp_path_factory.mktemp("fuzz-model")
    model.save(folder / "model.keras")
    make_card("binned", [3.0, 9.0, 16.0, 23.0, 30.5, 38.5, 46.0, 55.5, 70.0], padding=0.25).save(folder / "model.json")
    np.savez(folder / "validation.npz", faces=np.zeros((0, 3)))  # the registered pyfunc carries one; unused here
    return folder


@pytest.fixture(scope="module")
def real_faces(utkface_dir) -> list[bytes]:
    return [(utkface_dir / name).read_bytes() for name in sorted(os.listdir(utkface_dir))[400:403]]


@pytest.fixture(scope="module")
def servers(model_dir, detector, real_faces, tmp_path_factory):
    """{"faces": client, "photos": client}: MLflow's scoring app for each registered model."""
    import cv2
    import mlflow
    from mlflow.pyfunc import scoring_server
    from starlette.testclient import TestClient

    from argml.core.config import DecodeParams, LiveParams
    from argml.serving import photos, pyfunc

    store = tmp_path_factory.mktemp("fuzz-store")
    previous = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{store / 'mlflow.db'}"
    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    try:
        client = mlflow.MlflowClient()
        experiment = client.create_experiment("fuzz", artifact_location=(store / "mlruns").as_uri())
        run_id = client.create_run(experiment).info.run_id
        example = np.zeros((1, SIZE, SIZE, 3), np.uint8)
        pyfunc.log_model(run_id, model_dir, example, "fuzz", "binned")
        face = cv2.cvtColor(images.decode(real_faces[0]), cv2.COLOR_BGR2RGB)
        photos.log_photo_model(run_id, model_dir, "model.keras", "keras", detector, LiveParams(),
                               DecodeParams(LIMITS.max_pixels, LIMITS.max_bytes), "fuzz-photos", "binned", face)
        models = {"faces": mlflow.pyfunc.load_model("models:/fuzz@binned"),
                  "photos": mlflow.pyfunc.load_model("models:/fuzz-photos@binned")}
        yield {name: TestClient(scoring_server.init(model), raise_server_exceptions=False)
               for name, model in models.items()}
    finally:
        mlflow.set_tracking_uri(None)
        if previous is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = previous


def post(client, body, content_type: str = "application/json"):
    data = body if isinstance(body, bytes) else json.dumps(body, allow_nan=True).encode()
    return client.post("/invocations", content=data, headers={"Content-Type": content_type})


def assert_answered_or_refused(response) -> list | None:
    """A 2xx with predictions, or a 4xx whose body says why; never a 5xx. -> the predictions, if any."""
    assert response.status_code < 500, (response.status_code, response.text[:2000])
    if response.status_code >= 400:
        assert response.text.strip() and len(response.text) < 100_000
        return None
    return response.json()["predictions"]


# --- the face model: aligned faces as arrays ------------------------------------------------------------------

json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-300, 300), st.floats(allow_nan=True, allow_infinity=True),
              st.text(max_size=5)),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=5), inner, max_size=3)),
    max_leaves=12)


@st.composite
def face_arrays(draw):
    """[N, H, W, C] arrays, right or wrong in shape and values; N <= 2 of the right shape."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    right_shape = draw(st.booleans())
    shape = ((draw(st.integers(0, 2)), SIZE, SIZE, 3) if right_shape else
             tuple(draw(st.lists(st.integers(0, 5), min_size=0, max_size=5))))
    values = draw(st.sampled_from(["0-255", "0-1", "negative", "over 255", "nan", "mixed"]))
    array = {"0-255": lambda: rng.integers(0, 256, shape), "0-1": lambda: rng.random(shape),
             "negative": lambda: -rng.integers(1, 256, shape), "over 255": lambda: rng.integers(256, 10**6, shape),
             "nan": lambda: np.full(shape, math.nan), "mixed": lambda: rng.integers(0, 256, shape) + 0.5}[values]()
    return array.tolist()


@st.composite
def face_bodies(draw):
    way = draw(st.sampled_from(["inputs", "instances", "split", "records", "any json", "not json", "wrong type"]))
    if way in ("inputs", "instances"):
        return {way: draw(st.one_of(face_arrays(), face_arrays(), json_values))}, "application/json"
    if way == "split":
        return {"dataframe_split": {"columns": draw(st.lists(st.text(max_size=4), max_size=3)),
                                    "data": draw(json_values)}}, "application/json"
    if way == "records":
        return {"dataframe_records": draw(st.lists(st.dictionaries(st.text(max_size=4), json_values, max_size=3),
                                                   max_size=3))}, "application/json"
    if way == "any json":
        return draw(json_values), "application/json"
    if way == "not json":
        return draw(st.binary(max_size=200)), "application/json"
    return draw(st.binary(max_size=50)), draw(st.sampled_from(["text/csv", "text/plain", "application/json; x=1"]))


@examples("face_model_json")
@given(body=face_bodies())
def test_the_face_model_answers_faces_and_refuses_the_rest_with_a_400(servers, body):
    body, content_type = body
    predictions = assert_answered_or_refused(post(servers["faces"], body, content_type))
    if predictions is None:
        return
    faces = np.asarray(body["inputs"] if isinstance(body, dict) and "inputs" in body else body.get("instances"))
    assert faces.shape[1:] == (SIZE, SIZE, 3) and len(predictions) == len(faces)
    for row in predictions:
        assert abs(sum(row["race_probabilities"]) - 1) < 1e-4 and row["gender"] in ("male", "female")


# --- the photo model: encoded images in rows ------------------------------------------------------------------

@st.composite
def photo_rows(draw, faces: list[bytes]):
    row = {}
    kind = draw(st.sampled_from(["face", "image", "bad image", "bomb", "text", "missing"]))
    if kind == "face":
        row["image"] = base64.b64encode(draw(st.sampled_from(faces))).decode()
    elif kind == "image":
        row["image"] = base64.b64encode(draw(valid_images())).decode()
    elif kind == "bad image":
        row["image"] = base64.b64encode(draw(bad_images())).decode()
    elif kind == "bomb":  # over the model's pixel limit (1,000,000 here), tiny on the wire
        side = draw(st.integers(1001, 4000))
        from bad_inputs import zeros_png
        row["image"] = base64.b64encode(zeros_png(side, 1000)).decode()
    elif kind == "text":
        row["image"] = draw(st.text(max_size=40))
    if draw(st.booleans()):
        row["name"] = draw(st.one_of(st.text(max_size=12), st.none(), st.integers()))
    if draw(st.integers(0, 5)) == 0:
        row[draw(st.text(min_size=1, max_size=6))] = draw(json_values)
    return row


@st.composite
def photo_bodies(draw, faces: list[bytes]):
    way = draw(st.sampled_from(["records", "records", "records", "split", "inputs", "any json"]))
    rows = draw(st.lists(photo_rows(faces), min_size=0, max_size=3))
    if way == "records":
        return {"dataframe_records": rows}
    if way == "split":
        return {"dataframe_split": {"columns": ["name", "image"],
                                    "data": [[row.get("name"), row.get("image")] for row in rows]}}
    if way == "inputs":
        return {"inputs": draw(json_values)}
    return draw(json_values)


@pytest.fixture(scope="module")
def memory_start():
    start = reset_peak_rss()
    yield start
    assert peak_rss() - start < 600 << 20, f"peak RSS grew by {(peak_rss() - start) >> 20} MB"


def test_the_photo_model_answers_a_bomb_with_its_error_in_its_row(servers, real_faces):
    from bad_inputs import zeros_png

    records = [{"name": "face.jpg", "image": base64.b64encode(real_faces[0]).decode()},
               {"name": "bomb.png", "image": base64.b64encode(zeros_png(20000, 20000)).decode()}]
    predictions = assert_answered_or_refused(post(servers["photos"], {"dataframe_records": records}))
    bomb = [row for row in predictions if row["name"] == "bomb.png"]
    assert len(bomb) == 1 and bomb[0]["error"] == ("bomb.png: 20000x20000 = 400,000,000 pixels is over the limit "
                                                    "of 1,000,000 pixels (decode.max_pixels)")
    faces = [row for row in predictions if row["name"] == "face.jpg"]
    assert len(faces) == 1 and faces[0]["error"] is None and faces[0]["gender"] in ("male", "female")


@examples("photo_model_json")
@given(data=st.data())
def test_the_photo_model_answers_every_row_or_says_what_is_wrong_with_it(servers, real_faces, memory_start, data):
    body = data.draw(photo_bodies(real_faces))
    predictions = assert_answered_or_refused(post(servers["photos"], body))
    if predictions is None:
        return
    rows = body.get("dataframe_records") if isinstance(body, dict) else None
    if rows is None:
        return
    names = [row["name"] if isinstance(row.get("name"), str) else str(number) for number, row in enumerate(rows)]
    for row in predictions:
        assert row["name"] in names, row
        if row["error"] is not None:
            assert row["error"].startswith(f"{row['name']}: ") and "\n" not in row["error"], row["error"]
            assert row.get("face") is None
        else:
            assert row["gender"] in ("male", "female") and row["x2"] > row["x1"] and row["y2"] > row["y1"]
    for name, row in zip(names, rows):
        kind_error = [answer for answer in predictions if answer["name"] == name and answer["error"]]
        if not isinstance(row.get("image"), str) or not row.get("image"):
            assert kind_error, f"row {name} without an image got no error row"


# --- argml.predict on folders of generated files ---------------------------------------------------------------

@examples("predict_files")
@given(files=st.lists(st.tuples(st.sampled_from([".jpg", ".png", ".jpeg", ".PNG"]), bad_images()), min_size=1,
                      max_size=4))
def test_predict_lists_every_bad_file_and_answers_the_rest(model_dir, detector, tmp_path_factory, files):
    from argml.serving import predict

    folder = tmp_path_factory.mktemp("fuzz-predict")
    for index, (suffix, data) in enumerate(files):
        (folder / f"{index}{suffix}").write_bytes(data)
    summary = predict.run([str(folder)], str(folder / "out.csv"), model=str(model_dir / "model.keras"),
                          detector=detector, params=str(folder / "no-params.yaml"), backend="keras")
    assert summary["images"] == len(files)
    for path, reason in summary["problems"].items():
        assert reason.startswith(f"{path}: ") and "\n" not in reason
    readable = {str(folder / f"{index}{suffix}") for index, (suffix, _) in enumerate(files)} - set(summary["problems"])
    for path in readable:
        images.read(path)  # what predict read, the decode path reads
