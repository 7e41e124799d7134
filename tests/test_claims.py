"""What the README and docs claim about safety and robustness, each checked on real objects: a Lambda layer
refused by argml's own loader; FaceNet weights read weights-only; the photo model refusing a file changed inside
it; `--backend auto` and the sha256 check of a models:/ URI's cached export; a wrong input shape refused; a
training run that ends FAILED on an error and KILLED on Ctrl-C; early stopping's patience starting again on
resume; stack.json's mode 0600; the 20 MB photo limit; and no network at run time (docs/security.md lists them).

The models are small but real (a Keras model with argml's heads and model card), logged and registered by
argml's own code in a temporary MLflow store."""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

from argml.serving import inference  # first: the import order of torchvision and TensorFlow

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from argml.core import images  # noqa: E402
from argml.core.errors import BadInput, ChecksumError  # noqa: E402
from conftest import make_card  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SIZE = 160
AGES = [3.0, 9.0, 16.0, 23.0, 30.5, 38.5, 46.0, 55.5, 70.0]


def save_small_model(folder: Path, extra_layer=None) -> Path:
    import keras

    from argml.core.labels import AgeMode
    from argml.model.heads import build_heads

    keras.utils.set_random_seed(0)
    image = keras.Input((SIZE, SIZE, 3), name="image")
    x = keras.layers.Rescaling(1 / 255)(image)
    if extra_layer is not None:
        x = extra_layer(x)
    pooled = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(image, build_heads(3, AgeMode.of("binned"), hidden_units=8)(pooled))
    folder.mkdir(parents=True, exist_ok=True)
    model.save(folder / "model.keras")
    make_card("binned", AGES, padding=0.25).save(folder / "model.json")
    np.savez(folder / "validation.npz", faces=np.zeros((0, 3)))  # the registered pyfunc carries one
    return folder


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return save_small_model(tmp_path_factory.mktemp("claims-model"))


@pytest.fixture(scope="module")
def detector() -> str:
    path = os.environ.get("ARGML_YOLO_FACE", "")
    if not Path(path).is_file():
        pytest.skip("ARGML_YOLO_FACE is not set to the YOLO face model")
    return path


# --- loading --------------------------------------------------------------------------------------------------

def test_a_keras_file_with_a_lambda_layer_is_refused_and_its_code_never_runs(tmp_path):
    import keras

    marker = tmp_path / "the-lambda-ran"
    code = f"lambda x: (open({str(marker)!r}, 'w').close(), x)[1]"  # a side effect wherever it is called
    folder = save_small_model(tmp_path / "model", keras.layers.Lambda(eval(code)))  # noqa: S307 (our own text)
    marker.unlink()  # building the model called it once
    with pytest.raises(BadInput, match="could not be loaded by Keras") as refused:
        inference.load_classifier(folder / "model.keras", "keras")
    assert "lambda" in str(refused.value).lower() and "safe_mode" in str(refused.value)
    assert not marker.exists()
    keras.saving.load_model(folder / "model.keras", safe_mode=False)  # what safe mode prevents
    assert marker.exists()


class RunsCode:
    """Unpickling this runs code: it creates the folder `marker`."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


def test_facenet_weights_from_a_crafted_pt_never_run_its_code(tmp_path):
    """features.weights may name a user's facenet-pytorch .pt: it is read weights-only, so a pickle that runs
    code on load is refused and its code never runs (a plain torch.load would run it)."""
    import pickle

    import torch

    from argml.model import facenet

    marker, crafted = tmp_path / "code-ran", tmp_path / "20180402-114759-vggface2.pt"
    torch.save({"state_dict": RunsCode(marker)}, crafted)
    with pytest.raises(pickle.UnpicklingError):
        facenet.read_torch_state_dict(crafted)
    assert not marker.exists()
    torch.load(crafted, weights_only=False)  # what weights-only loading prevents
    assert marker.exists()


@pytest.fixture(scope="module")
def registry(model_dir, detector, utkface_dir, tmp_path_factory):
    """A temporary MLflow store holding `claims` (the face model, alias binned, with LiteRT exports logged and
    tagged by the export stage's code) and `claims-photos`; -> (store folder, run id)."""
    import cv2
    import mlflow

    from argml.core.config import DecodeParams, LiveParams
    from argml.serving import convert, exports, photos, pyfunc

    store = tmp_path_factory.mktemp("claims-store")
    previous = {key: os.environ.get(key) for key in ("MLFLOW_TRACKING_URI", "ARGML_CACHE")}
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{store / 'mlflow.db'}"
    os.environ["ARGML_CACHE"] = str(store / "cache")
    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    try:
        client = mlflow.MlflowClient()
        experiment = client.create_experiment("claims", artifact_location=(store / "mlruns").as_uri())
        run_id = client.create_run(experiment).info.run_id
        pyfunc.log_model(run_id, model_dir, np.zeros((1, SIZE, SIZE, 3), np.uint8), "claims", "binned")
        export_dir = store / "litert"
        for kind in convert.KINDS:
            convert.export(model_dir / "model.keras", export_dir / convert.export_name(kind), kind)
        (export_dir / "model.json").write_text((model_dir / "model.json").read_text())
        (store / "export.json").write_text(json.dumps({"int8": {"within_tolerance": True}}))
        exports.log_exports(run_id, export_dir, store / "export.json", "claims", "binned")
        face = images.decode((utkface_dir / sorted(os.listdir(utkface_dir))[0]).read_bytes())
        photos.log_photo_model(run_id, model_dir, "model.keras", "keras", detector, LiveParams(), DecodeParams(),
                               "claims-photos", "binned", cv2.cvtColor(face, cv2.COLOR_BGR2RGB))
        yield store, run_id
    finally:
        mlflow.set_tracking_uri(None)
        for key, value in previous.items():
            os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)


@pytest.mark.slow
def test_backend_auto_takes_the_int8_export_within_tolerance_and_checks_its_sha256(registry):
    import mlflow

    store, run_id = registry
    uri = "models:/claims@binned"
    assert inference.choose_backend(uri, "auto") == "litert"
    first = inference.load_classifier(uri, "auto")
    assert type(first).__name__ == "LiteClassifier"
    cached = store / "cache" / "litert" / run_id / "litert" / "model.int8.tflite"
    assert first.path == cached
    faces = np.random.default_rng(0).integers(0, 256, (2, SIZE, SIZE, 3), dtype=np.uint8)
    expected = first.probabilities(faces)["race"]

    cached.write_bytes(cached.read_bytes()[:-1] + b"\0")  # a changed cache copy is fetched again
    again = inference.load_classifier(uri, "auto")
    np.testing.assert_array_equal(again.probabilities(faces)["race"], expected)

    logged = next((store / "mlruns").rglob("artifacts/litert/model.int8.tflite"))
    logged.write_bytes(logged.read_bytes()[:-1] + b"\0")  # the store's own copy changed: refused
    cached.unlink()
    with pytest.raises(ChecksumError, match="does not match its recorded sha256"):
        inference.load_classifier(uri, "auto")

    version = mlflow.MlflowClient().get_model_version_by_alias("claims", "binned")
    mlflow.MlflowClient().set_model_version_tag("claims", version.version, "litert_within_tolerance", "false")
    assert inference.choose_backend(uri, "auto") == "keras"


def test_the_face_model_refuses_a_wrong_input_shape(registry):
    import mlflow

    model = mlflow.pyfunc.load_model("models:/claims@binned")
    assert len(model.predict(np.zeros((2, SIZE, SIZE, 3), np.uint8))) == 2
    for shape in ((1, 100, 100, 3), (SIZE, SIZE, 3), (1, SIZE, SIZE, 4)):
        with pytest.raises(mlflow.exceptions.MlflowException, match=r"shape \[N, 160, 160, 3\]"):
            model.predict(np.zeros(shape, np.uint8))


@pytest.mark.parametrize("inside", ["classifier", "detector"])
def test_the_photo_model_refuses_a_file_changed_inside_it(registry, tmp_path, inside):
    import mlflow

    local = Path(mlflow.artifacts.download_artifacts("models:/claims-photos@binned", dst_path=str(tmp_path)))
    target = (local / "artifacts" / "classifier" / "model.keras" if inside == "classifier"
              else next((local / "artifacts").glob("*.tflite")))
    assert mlflow.pyfunc.load_model(str(local)) is not None  # as logged: loads
    target.write_bytes(target.read_bytes() + b"\0")
    with pytest.raises(Exception, match=f"the {'face detector' if inside == 'detector' else 'classifier'} .* does "
                                        "not match the sha256 it was logged with"):
        mlflow.pyfunc.load_model(str(local))


# --- training runs --------------------------------------------------------------------------------------------

def test_a_training_run_ends_failed_on_an_error_and_killed_on_ctrl_c(tmp_path, monkeypatch):
    import mlflow

    from argml.tracking import runs

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.chdir(tmp_path)
    outcomes = {}
    for name, error in (("failed", ValueError("a bug in the middle of training")), ("killed", KeyboardInterrupt())):
        with pytest.raises(type(error)):
            with runs.training_run(name, {"train.seed": 0}, tmp_path / f"{name}.json") as run_id:
                raise error
        outcomes[name] = mlflow.MlflowClient().get_run(run_id).info.status
    with runs.training_run("finished", {}, tmp_path / "finished.json") as run_id:
        pass
    outcomes["finished"] = mlflow.MlflowClient().get_run(run_id).info.status
    assert outcomes == {"failed": "FAILED", "killed": "KILLED", "finished": "FINISHED"}
    mlflow.set_tracking_uri(None)


def test_early_stopping_patience_starts_again_on_resume(tmp_path):
    """With argml's own callbacks: validation loss that only worsens after the first epoch stops a whole run
    after 1 + patience epochs; a run killed after epoch 2 and resumed runs `patience` more epochs from there,
    since the backup keeps the epoch and the weights but not early stopping's counter (as the README says)."""
    import keras

    from argml.model.train import _callbacks

    patience, x = 2, np.linspace(-1, 1, 64, dtype=np.float32)[:, None]

    def fit(checkpoints: Path, stop_after: int | None = None) -> int:
        checkpoints.mkdir(exist_ok=True)  # as train() makes it
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1, use_bias=False,
                                                                        kernel_initializer="zeros")])
        model.compile(keras.optimizers.SGD(0.5), "mse")

        def kill(step, logs):  # called after the epoch's backup and CSV row are written; steps count from 1
            if step == stop_after:
                raise KeyboardInterrupt

        try:
            model.fit(x, x, validation_data=(x, -x), epochs=20, batch_size=64, verbose=0,
                      callbacks=_callbacks("phase", checkpoints, tmp_path / "logs", patience, 0, kill))
        except KeyboardInterrupt:
            return -1
        return len(_epochs(checkpoints))

    assert fit(tmp_path / "whole") == 1 + patience
    assert fit(tmp_path / "killed", stop_after=2) == -1 and len(_epochs(tmp_path / "killed")) == 2
    assert fit(tmp_path / "killed") == 2 + patience + 1  # epoch 3 is the resumed part's best, then patience


def _epochs(checkpoints: Path) -> list[int]:
    import pandas as pd

    return pd.read_csv(checkpoints / "phase.csv").drop_duplicates("epoch")["epoch"].tolist()


# --- the team stack, the photo limit, the network ----------------------------------------------------------------

def test_stack_json_is_written_mode_0600_even_over_a_stale_file(tmp_path):
    from argml.stack.state import read_state, write_state

    state = {"ports": {"mlflow": 5000}, "passwords": {"trainer": "secret"}}
    (tmp_path / "stack.tmp").write_text("left by a crash")
    (tmp_path / "stack.tmp").chmod(0o644)
    write_state(tmp_path, state)
    assert stat.S_IMODE((tmp_path / "stack.json").stat().st_mode) == 0o600
    assert read_state(tmp_path) == state
    write_state(tmp_path, {**state, "ports": {"mlflow": 5001}})
    assert stat.S_IMODE((tmp_path / "stack.json").stat().st_mode) == 0o600


def test_the_photo_model_takes_files_up_to_20_mb_and_no_more():
    import cv2

    from argml.serving import photos

    limit = 20 << 20
    jpeg = cv2.imencode(".jpg", np.zeros((40, 30, 3), np.uint8))[1].tobytes()
    at_limit = jpeg + b"\0" * (limit - len(jpeg))  # trailing zeros after the end marker: still a whole JPEG
    assert photos.decode(base64.b64encode(at_limit).decode(), "big.jpg").shape == (40, 30, 3)
    with pytest.raises(images.ImageError, match=r"big.jpg: 20,971,521 bytes is over the limit of 20,971,520 bytes"):
        photos.decode(base64.b64encode(at_limit + b"\0").decode(), "big.jpg")
    with pytest.raises(images.ImageError, match="over the limit of 20,971,520 bytes"):
        photos.decode("A" * (4 * (limit // 3 + 1) + 4), "huge.jpg")  # refused before its base64 is decoded


NO_NETWORK = """
import ipaddress, socket, sys

def loopback(host):
    try:
        return host in ("localhost", "", None) or ipaddress.ip_address(str(host).split("%")[0]).is_loopback
    except ValueError:
        return False

def refuse(what):
    print(f"NETWORK ATTEMPT: {what}", file=sys.stderr, flush=True)  # seen even if the caller swallows the error
    raise OSError(f"network blocked by the test: {what}")

def guard(event, args):
    if event == "socket.connect" and args[0].family in (socket.AF_INET, socket.AF_INET6) and not loopback(args[1][0]):
        refuse(f"connect {args[1]}")
    if event in ("socket.getaddrinfo", "socket.gethostbyname") and not loopback(args[0]):
        refuse(f"resolve {args[0]}")

sys.addaudithook(guard)
from argml.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_predict_and_live_run_with_the_network_blocked(model_dir, detector, utkface_dir, tmp_path):
    """Sockets to anything but loopback, and name lookups, raise in these processes (an audit hook): predict and
    the live demo still run, and nothing tried."""
    face = tmp_path / "face.jpg"
    face.write_bytes((utkface_dir / sorted(os.listdir(utkface_dir))[0]).read_bytes())
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for args in (["predict", str(face), "--out", str(tmp_path / "p.csv"), "--model", str(model_dir / "model.keras"),
                  "--detector", detector],
                 ["live", str(face), "--model", str(model_dir / "model.keras"), "--detector", detector, "--headless",
                  "--jsonl", str(tmp_path / "live.jsonl")]):
        result = subprocess.run([sys.executable, "-c", NO_NETWORK, *args], cwd=tmp_path, env=env,
                                capture_output=True, text=True, timeout=600)
        output = result.stdout + result.stderr
        assert result.returncode == 0 and "NETWORK ATTEMPT" not in output, output[-3000:]
    assert len((tmp_path / "p.csv").read_text().splitlines()) == 2  # the header and the one face
    assert len((tmp_path / "live.jsonl").read_text().splitlines()) == 1
