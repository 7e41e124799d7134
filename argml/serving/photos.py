"""Photos over REST: an MLflow pyfunc that takes encoded images and answers one row per face.

Registered by the export stage as `<mlflow.model_name>-photos` (aliases binned, exact and, from the champion
stage, champion), beside the model that takes aligned faces. Server-side it decodes each image, finds faces
with the YOLO face detector, aligns them as in training and classifies them (argml.serving.inference), with the
mode's int8 LiteRT export where that is within tolerance of Keras, else the Keras model.

Input: a table with a column `image` (base64 of a JPEG or PNG file) and optionally `name`:

    curl -s 127.0.0.1:5002/invocations -H 'Content-Type: application/json' \
      -d '{"dataframe_records": [{"name": "me.jpg", "image": "'"$(base64 -w0 me.jpg)"'"}]}'

Output: per face, `name`, `face`, the box, `detector_confidence` and what `argml.predict` gives (label,
probability and distribution per task, `age_years`); an image that cannot be read gets one row with `error`
set and no face (an unreadable image, or one over the decode limits, for example "x.png: 20000x20000 =
400,000,000 pixels is over the limit of 50,000,000 pixels"), instead of failing the request.
"""

from __future__ import annotations

import base64
import binascii
import importlib.metadata
import json
import shutil
import tempfile
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, Schema

from argml.core import images
from argml.core.errors import BadInput, ChecksumError, UserError
from argml.core.files import file_digest
from argml.serving.pyfunc import PACKAGE
from argml.tracking.runs import reopened

INPUT_SCHEMA = Schema([ColSpec("string", "image"), ColSpec("string", "name", required=False)])


def model_name(base: str) -> str:
    """The photo model's registered name beside the face model `base`."""
    return f"{base}-photos"


def decode(encoded: str, name: str = "image", limits: images.Limits = images.Limits()) -> np.ndarray:
    """base64 of an image file -> BGR pixels, within `limits`; a BadInput (ImageError for the image itself)
    saying what is wrong, naming the image."""
    if not isinstance(encoded, str) or not encoded:
        raise BadInput(f"{name}: no image: `image` must hold the base64 of a JPEG or PNG file")
    if len(encoded) > 4 * (limits.max_bytes // 3 + 1):  # before decoding the base64 itself
        raise images.ImageError(f"{name}: over the limit of {limits.max_bytes:,} bytes (decode.max_bytes)",
                                "too-large")
    try:
        data = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise BadInput(f"{name}: `image` is not valid base64") from None
    return images.decode(data, name, limits)


class PhotoPyfunc(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        from argml.serving import inference  # first: it fixes the import order of torchvision and TensorFlow

        settings = json.loads(Path(context.artifacts["settings"]).read_text())
        detector = Path(context.artifacts["detector"])
        if file_digest(detector, "sha256") != settings["detector_sha256"]:
            raise ChecksumError(f"the face detector {detector} does not match the sha256 it was logged with")
        classifier = Path(context.artifacts["classifier"]) / settings["classifier"]
        if file_digest(classifier, "sha256") != settings["classifier_sha256"]:
            raise ChecksumError(f"the classifier {classifier} does not match the sha256 it was logged with")
        self.detector = inference.detect.FaceDetector(detector, settings["detector_confidence"],
                                                      settings["detector_imgsz"], settings.get("detector_threads", 0))
        self.classifier = inference.FaceClassifier(classifier, settings["backend"], settings.get("threads", 0))
        self.backend = settings["backend"]
        self.limits = images.Limits(settings.get("max_pixels", images.DEFAULT_MAX_PIXELS),
                                    settings.get("max_bytes", images.DEFAULT_MAX_BYTES))

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        from argml.serving import inference

        tables = []
        for row_number, row in enumerate(pd.DataFrame(model_input).to_dict("records")):
            name = row.get("name") if isinstance(row.get("name"), str) else str(row_number)
            try:
                faces = inference.predict_image(decode(row.get("image"), name, self.limits), self.detector,
                                                 self.classifier)
            except UserError as error:  # this image's own problem; a bug fails the request
                tables.append(pd.DataFrame([{"name": name, "error": str(error)}]))
                continue
            tables.append(faces.assign(name=name, error=None))
        if not tables:
            return pd.DataFrame(columns=["name", "error", *inference.BOX_COLUMNS])
        table = pd.concat(tables, ignore_index=True)
        if "face" in table:
            table["face"] = table["face"].astype("Int64")  # an error row has none: keep the others integers
        first = ["name", "error", *inference.BOX_COLUMNS]
        table = table[[c for c in first if c in table] + [c for c in table.columns if c not in first]]
        return table.astype(object).where(table.notna(), None)  # JSON null, not NaN, for missing cells


def _requirements() -> list[str]:
    names = ("tensorflow-cpu", "keras", "ai-edge-litert", "ultralytics", "opencv-python-headless", "dlib",
             "face-recognition-models", "numpy", "pandas", "mlflow")
    found = []
    for name in names:
        try:
            found.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def encode(image_rgb: np.ndarray) -> str:
    """base64 of a JPEG of an RGB image: what a client sends."""
    import cv2

    return base64.b64encode(cv2.imencode(".jpg", cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR))[1].tobytes()).decode()


def log_photo_model(run_id: str, classifier_dir: str | Path, classifier_file: str, backend: str,
                    detector: str | Path, live_settings, decode_settings, model_name: str, alias: str,
                    example_rgb: np.ndarray) -> int:
    """Log the photo pyfunc to `run_id` (artifact `photos`), register it as `model_name` and set `alias`.
    `classifier_dir` holds `classifier_file` (a .tflite export or model.keras) and model.json; `example_rgb`
    (a real face photo) becomes the input example."""
    classifier_dir, detector = Path(classifier_dir), Path(detector)
    settings = {"classifier": classifier_file, "backend": backend,
                "classifier_sha256": file_digest(classifier_dir / classifier_file, "sha256"),
                "detector_sha256": file_digest(detector, "sha256"),
                "detector_confidence": live_settings.detector_confidence,
                "detector_imgsz": live_settings.detector_imgsz, "detector_threads": live_settings.detector_threads,
                "threads": 0, "max_pixels": decode_settings.max_pixels, "max_bytes": decode_settings.max_bytes}
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / "classifier"
        folder.mkdir()
        for name in (classifier_file, "model.json"):
            shutil.copyfile(classifier_dir / name, folder / name)
        (Path(scratch) / "settings.json").write_text(json.dumps(settings, indent=2))
        signature = ModelSignature(inputs=INPUT_SCHEMA)  # rows per face vary: no output schema
        with reopened(run_id):  # the training run keeps its end time
            info = mlflow.pyfunc.log_model(
                name="photos", python_model=PhotoPyfunc(),
                artifacts={"classifier": str(folder), "detector": str(detector),
                           "settings": str(Path(scratch) / "settings.json")},
                signature=signature, input_example=pd.DataFrame({"name": ["face.jpg"], "image": [encode(example_rgb)]}),
                pip_requirements=_requirements(),
                metadata={"input": "column image: base64 JPEG/PNG files; optional column name"},
                code_paths=[str(PACKAGE)], registered_model_name=model_name)
    version = int(info.registered_model_version)
    client = mlflow.MlflowClient()
    for key, value in {"age_mode": alias, "backend": backend, "classifier_sha256": settings["classifier_sha256"],
                       "detector_sha256": settings["detector_sha256"]}.items():
        client.set_model_version_tag(model_name, str(version), key, value)
    client.set_registered_model_alias(model_name, alias, version)
    return version
