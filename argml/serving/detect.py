"""Face detection and tracking with an Ultralytics YOLO face model: the only module importing ultralytics.

The model comes from a path or URL (`--detector`, else $ARGML_YOLO_FACE); a URL is downloaded once into the
cache folder (keyed by the URL) and its sha256 is checked on every use. YOLO pose face models (e.g.
yolov8n-face) also give 5 keypoints per face.

Safety: `.onnx` and `.tflite` files hold no code. A `.pt` checkpoint is a pickle, which can run code when
loaded, so it is always loaded with Ultralytics' restricted loading (`torch.load(weights_only=True)` and an
allow-list of Ultralytics/torch classes); anything else in it is refused.

Import order matters: TensorFlow imported before torchvision makes triton's start-up segfault in the same
process, and Ultralytics imports torchvision lazily. Entry points therefore import this module (which
imports torchvision at once) before anything that imports TensorFlow or Keras.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

os.environ.setdefault("YOLO_OFFLINE", "1")  # no start-up network probes
os.environ["ULTRALYTICS_SAFE_LOAD"] = "1"  # read when ultralytics is imported: .pt files load weights-only
if "tensorflow" in sys.modules and "torchvision" not in sys.modules:
    raise ImportError("import argml.serving.detect (torchvision) before TensorFlow/Keras: the other order crashes "
                      "in triton's start-up (see README, 'Live demo')")
import torchvision  # noqa: E402,F401  (must precede TensorFlow; see the docstring)

import hashlib  # noqa: E402

import numpy as np  # noqa: E402

from argml.core.errors import BadInput, Unavailable  # noqa: E402
from argml.core.files import cache_dir, file_digest  # noqa: E402
from argml.data.download import ChecksumError, download_file  # noqa: E402

ENV_DETECTOR = "ARGML_YOLO_FACE"
FORMATS = (".onnx", ".tflite", ".pt")  # .pt: loaded weights-only (see the module docstring)


def _set_litert_threads(threads: int) -> None:
    """Ultralytics runs a .tflite detector with min(8, CPUs - 1) threads (one on a 2-CPU machine, where YOLO
    is then the live path's bottleneck) and has no setting for it: its LiteRT backend reads the module
    constant NUM_THREADS when it builds the interpreter. `threads` 0: one per CPU."""
    try:
        from ultralytics.nn.backends import litert as backend
    except ImportError:  # another Ultralytics layout: keep its default
        return
    backend.NUM_THREADS = threads or os.cpu_count() or 1


@dataclass
class Face:
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in pixels
    confidence: float
    track_id: int | None = None
    keypoints: np.ndarray | None = None  # [5, 2] eyes, nose, mouth corners, when the model gives them


def resolve_detector(source: str | None = None, sha256: str = "") -> Path:
    """A local model file from a path or URL, or $ARGML_YOLO_FACE.

    A URL is downloaded once (progress bar, retries) into the cache, in a folder named after the URL, with
    the file's sha256 recorded beside it. Every use checks the file against `sha256` when given, else against
    the digest recorded at download, so a changed cache file is never used silently."""
    source = source or os.environ.get(ENV_DETECTOR, "")
    if not source:
        raise FileNotFoundError(f"no face detector: pass --detector PATH_OR_URL or set {ENV_DETECTOR} to an "
                                f"Ultralytics YOLO face model ({', '.join(FORMATS)})")
    if urlparse(source).scheme in ("http", "https"):
        path = _cached_download(source, sha256)
    elif urlparse(source).scheme:
        raise BadInput(f"face detector {source!r}: only http(s) URLs and local paths are supported")
    else:
        path = Path(source).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"face detector {path} not found")
        if sha256:
            _check_digest(path, sha256)
    if path.suffix.lower() not in FORMATS:
        raise BadInput(f"face detector {path.name}: use an Ultralytics YOLO model in one of {', '.join(FORMATS)}")
    return path


def _check_digest(path: Path, sha256: str) -> None:
    actual = file_digest(path, "sha256")
    if actual != sha256.lower():
        raise ChecksumError(f"sha256 of face detector {path} is {actual}, expected {sha256.lower()}")


def _cached_download(url: str, sha256: str) -> Path:
    import requests

    folder = cache_dir("detectors", hashlib.sha256(url.encode()).hexdigest()[:16])
    target = folder / (Path(urlparse(url).path).name or "detector")
    recorded = target.with_name(target.name + ".sha256")
    if not (target.is_file() and recorded.is_file()):
        folder.mkdir(parents=True, exist_ok=True)
        try:
            download_file(url, target, sha256)
        except requests.RequestException as error:
            raise Unavailable(f"face detector {url} could not be downloaded: {error}") from None
        recorded.write_text(file_digest(target, "sha256") + "\n")
    _check_digest(target, sha256 or recorded.read_text().strip())
    return target


class FaceDetector:
    """YOLO face detection (`detect`) or detection + ByteTrack identities (`track`). Create and use it in
    one thread (Ultralytics models are not thread-safe)."""

    def __init__(self, model_path: str | Path, confidence: float = 0.5, imgsz: int = 640, threads: int = 0):
        os.environ.setdefault("YOLO_CONFIG_DIR", str(cache_dir("ultralytics")))
        from ultralytics import YOLO
        from ultralytics.nn import tasks

        if Path(model_path).suffix.lower() == ".tflite":
            _set_litert_threads(threads)

        model_path = Path(model_path)
        if model_path.suffix.lower() == ".pt" and not tasks.SAFE_LOAD:
            raise RuntimeError("ultralytics was imported before argml.detect, without restricted .pt loading; "
                               "set ULTRALYTICS_SAFE_LOAD=1 or use an .onnx/.tflite detector")
        try:  # the task (pose for 5-keypoint face models) comes from the model's metadata
            self.model = YOLO(str(model_path))
        except Exception as error:  # noqa: BLE001 (Ultralytics raises many kinds for a bad file)
            raise _unloadable(model_path, error) from None
        self.path, self.confidence, self.imgsz, self.loaded = model_path, confidence, imgsz, False

    @staticmethod
    def _faces(result) -> list[Face]:
        boxes = result.boxes
        if boxes is None or len(boxes) == 0:
            return []
        ids = boxes.id.int().tolist() if boxes.id is not None else [None] * len(boxes)  # None: not tracked
        points = result.keypoints.xy.cpu().numpy() if result.keypoints is not None else [None] * len(boxes)
        return [Face(tuple(float(v) for v in xyxy), float(conf), track_id, kp)
                for xyxy, conf, track_id, kp in zip(boxes.xyxy.tolist(), boxes.conf.tolist(), ids, points)]

    def _first(self, call):
        """Ultralytics reads some model files (.tflite, .onnx) only at the first prediction: a damaged one is
        a BadInput naming the file there, not an error from deep inside Ultralytics."""
        if self.loaded:
            return call()
        try:
            result = call()
        except Exception as error:  # noqa: BLE001 (Ultralytics raises many kinds for a bad file)
            raise _unloadable(self.path, error) from None
        self.loaded = True
        return result

    def detect(self, frame_bgr: np.ndarray) -> list[Face]:
        result = self._first(lambda: self.model.predict(frame_bgr, conf=self.confidence, imgsz=self.imgsz,
                                                        verbose=False))[0]
        return self._faces(result)

    def track(self, frame_bgr: np.ndarray) -> list[Face]:
        """Faces with persistent track ids across calls (ByteTrack, Ultralytics' default settings)."""
        result = self._first(lambda: self.model.track(frame_bgr, conf=self.confidence, imgsz=self.imgsz,
                                                      persist=True, tracker="bytetrack.yaml", verbose=False))[0]
        return self._faces(result)


def _unloadable(model_path: Path, error: Exception) -> BadInput:
    first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return BadInput(f"face detector {model_path} could not be loaded as an Ultralytics YOLO model "
                    f"(refused or damaged: {first_line})")
