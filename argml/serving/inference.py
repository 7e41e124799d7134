"""Inference on faces in images, shared by `argml.live`, `argml.predict`, the photo model, audits and benchmarks.

- `load_classifier(model, backend)`: a trained model from a `models:/` or `runs:/` URI (MLflow), a `.keras`
  file or a `.tflite` LiteRT export (argml.serving.litert), with its `model.json` beside the file;
- `FaceClassifier`: aligns the boxes a detector found exactly as the model's training data was aligned (the
  alignment recorded in its `model.json`) and classifies them as one batch;
- `settings(params)` and `open_detector(...)`: the `live` section of params.yaml and the YOLO face detector.

Import order: TensorFlow imported before torchvision makes triton's start-up segfault in the same process,
and Ultralytics imports torchvision lazily. This module therefore imports argml.detect (which imports
torchvision at once) before anything that imports TensorFlow or Keras, and entry points that run YOLO beside
a classifier import this module first.
"""

from __future__ import annotations

from argml.serving import detect  # first: see the import order above

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from argml.core import images  # noqa: E402
from argml.core.card import ModelCard  # noqa: E402
from argml.core.config import BACKENDS, LiveParams, load_params  # noqa: E402
from argml.core.errors import BadInput  # noqa: E402
from argml.core.labels import TASKS  # noqa: E402

DEFAULT_MODEL = "models:/argml@champion"


def settings(params: str | Path = "params.yaml") -> LiveParams:
    """The `live` section of `params` (defaults when there is no such file, e.g. outside the repository)."""
    return load_params(params).live if Path(params).exists() else LiveParams()


def decode_limits(params: str | Path = "params.yaml") -> images.Limits:
    """The `decode` section of `params` (defaults when there is no such file): the limits of every image read."""
    return load_params(params).decode.limits() if Path(params).exists() else images.Limits()


def open_detector(live: LiveParams, detector: str | None = None, sha256: str = "") -> detect.FaceDetector:
    """The YOLO face detector: `detector` (a path, or a URL checked against `sha256`) or $ARGML_YOLO_FACE."""
    return detect.FaceDetector(detect.resolve_detector(detector, sha256), live.detector_confidence,
                               live.detector_imgsz, live.detector_threads)


def is_registry_uri(model: str) -> bool:
    return "://" in model or model.startswith(("models:/", "runs:/"))


def choose_backend(model: str | Path, backend: str = "auto") -> str:
    """keras or litert. `auto`: a .tflite file runs on LiteRT; a models:/ URI on its version's int8 LiteRT
    export when the export stage found it within tolerance of Keras; anything else on Keras."""
    if backend not in BACKENDS:
        raise BadInput(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend != "auto":
        return backend
    if str(model).endswith(".tflite"):
        return "litert"
    if str(model).startswith("models:/"):
        from argml.serving import exports

        return exports.registered_backend(str(model))
    return "keras"


def load_classifier(model: str | Path, backend: str = "keras", threads: int = 0):
    """A classifier (Keras or LiteRT) from a models:/ or runs:/ URI (MLflow), a .keras file or a .tflite
    export, with its model.json beside the file. `threads`: LiteRT's (0 = one per CPU)."""
    from argml.serving import exports, litert
    from argml.serving.classifier import Classifier

    backend = choose_backend(model, backend)
    model = str(model)
    if backend == "litert":
        if model.endswith(".tflite"):
            return litert.LiteClassifier(model, threads=threads)
        if model.startswith("models:/"):
            return exports.registered_export(model, "int8", threads)
        raise BadInput(f"--backend litert needs a models:/ URI or a .tflite export (dvc repro writes "
                       f"data/litert/<mode>/model.int8.tflite), got {model}")
    if model.endswith(".tflite"):
        raise BadInput(f"{model} is a LiteRT export: use --backend litert (or auto)")
    if is_registry_uri(model):
        from argml.serving import pyfunc

        return pyfunc.load_classifier(model)
    return Classifier(model)


def recorded_padding(card: ModelCard) -> float:
    """The alignment margin the model was trained with; a card without it is refused, since a guess would
    silently shift every face away from what the model learned."""
    if card.align is None:
        raise BadInput("the model's model.json records no alignment (align.padding): retrain it with this "
                       "version of argml, or add the padding its training data used")
    return card.align.padding


class FaceClassifier:
    """Aligns faces and classifies them as one batch."""

    def __init__(self, model: str | Path, backend: str = "keras", threads: int = 0):
        from argml.data.faces import FaceAligner

        self.classifier = load_classifier(model, backend, threads)
        self.card: ModelCard = self.classifier.card
        self.aligner = FaceAligner(size=self.classifier.input_size, padding=recorded_padding(self.card))
        size = self.classifier.input_size
        for batch in (1, 2):  # trace the model now, not on the first faces (two shapes: Keras then relaxes)
            self.classifier.probabilities(np.zeros((batch, size, size, 3), np.uint8))

    def align(self, image_rgb: np.ndarray, boxes: list) -> np.ndarray:
        """[len(boxes), S, S, 3] uint8 RGB faces, aligned as the training data was."""
        return np.stack([self.aligner.align(image_rgb, box) for box in boxes])

    def probabilities(self, image_rgb: np.ndarray, boxes: list) -> list[dict[str, np.ndarray]]:
        """Per box, {task: class probabilities}."""
        if not boxes:
            return []
        values = self.classifier.probabilities(self.align(image_rgb, boxes))
        return [{task: values[task][i] for task in TASKS} for i in range(len(boxes))]

    def predict(self, image_rgb: np.ndarray, boxes: list) -> pd.DataFrame:
        """One row per box: label, probability and distribution per task, and the expected age in years."""
        if not boxes:
            return pd.DataFrame()
        return self.classifier.predict(self.align(image_rgb, boxes))


BOX_COLUMNS = ["face", "x1", "y1", "x2", "y2", "detector_confidence"]


def predict_image(image_bgr: np.ndarray, face_detector: detect.FaceDetector,
                  classifier: FaceClassifier) -> pd.DataFrame:
    """Every face the detector finds in one image: its index and box, the detector's confidence, and per
    task the label, its probability and distribution (plus the expected age). No face: no rows."""
    import cv2

    faces = face_detector.detect(image_bgr)
    if not faces:
        return pd.DataFrame(columns=BOX_COLUMNS)
    answers = classifier.predict(cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB), [face.box for face in faces])
    boxes = pd.DataFrame([{"face": index, **dict(zip(BOX_COLUMNS[1:5], (round(v, 1) for v in face.box))),
                           "detector_confidence": round(face.confidence, 4)} for index, face in enumerate(faces)])
    return pd.concat([boxes, answers.reset_index(drop=True)], axis=1)
