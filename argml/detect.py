"""Face detection and tracking with an Ultralytics YOLO face model: the only module importing ultralytics.

The model comes from a path or URL (`--detector`, else $ARGML_YOLO_FACE); a URL is downloaded once into the
cache folder and reused. YOLO pose face models (e.g. yolov8n-face) also give 5 keypoints per face.

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
if "tensorflow" in sys.modules and "torchvision" not in sys.modules:
    raise ImportError("import argml.detect (torchvision) before TensorFlow/Keras: the other order crashes "
                      "in triton's start-up (see README, 'Live demo')")
import torchvision  # noqa: E402,F401  (must precede TensorFlow; see the docstring)

import numpy as np  # noqa: E402

ENV_DETECTOR = "ARGML_YOLO_FACE"


@dataclass
class Face:
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in pixels
    confidence: float
    track_id: int | None = None
    keypoints: np.ndarray | None = None  # [5, 2] eyes, nose, mouth corners, when the model gives them


def resolve_detector(source: str | None = None, sha256: str = "") -> Path:
    """A local model file from a path or URL, or $ARGML_YOLO_FACE. A URL is downloaded once into the cache
    (with a progress bar, retries, and the sha256 checked when given); later calls reuse the file."""
    source = source or os.environ.get(ENV_DETECTOR, "")
    if not source:
        raise FileNotFoundError(f"no face detector: pass --detector PATH_OR_URL or set {ENV_DETECTOR} to an "
                                "Ultralytics YOLO face model (.pt, .onnx or .tflite)")
    if urlparse(source).scheme in ("http", "https"):
        from argml.download import download_file
        from argml.facenet import cache_dir

        target = cache_dir() / "detectors" / Path(urlparse(source).path).name
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            download_file(source, target, sha256)
        return target
    path = Path(source).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"face detector {path} not found")
    return path


class FaceDetector:
    """YOLO face detection (`detect`) or detection + ByteTrack identities (`track`). Create and use it in
    one thread (Ultralytics models are not thread-safe)."""

    def __init__(self, model_path: str | Path, confidence: float = 0.5, imgsz: int = 640):
        os.environ.setdefault("YOLO_CONFIG_DIR", str(Path(os.environ.get("ARGML_CACHE", "~/.cache/argml"))
                                                     .expanduser() / "ultralytics"))
        from ultralytics import YOLO

        self.model = YOLO(str(model_path))  # the task (pose for 5-keypoint face models) comes from its metadata
        self.confidence, self.imgsz = confidence, imgsz

    @staticmethod
    def _faces(result) -> list[Face]:
        boxes = result.boxes
        if boxes is None or len(boxes) == 0:
            return []
        ids = boxes.id.int().tolist() if boxes.id is not None else [None] * len(boxes)  # None: not tracked
        points = result.keypoints.xy.cpu().numpy() if result.keypoints is not None else [None] * len(boxes)
        return [Face(tuple(float(v) for v in xyxy), float(conf), track_id, kp)
                for xyxy, conf, track_id, kp in zip(boxes.xyxy.tolist(), boxes.conf.tolist(), ids, points)]

    def detect(self, frame_bgr: np.ndarray) -> list[Face]:
        result = self.model.predict(frame_bgr, conf=self.confidence, imgsz=self.imgsz, verbose=False)[0]
        return self._faces(result)

    def track(self, frame_bgr: np.ndarray) -> list[Face]:
        """Faces with persistent track ids across calls (ByteTrack, Ultralytics' default settings)."""
        result = self.model.track(frame_bgr, conf=self.confidence, imgsz=self.imgsz, persist=True,
                                  tracker="bytetrack.yaml", verbose=False)[0]
        return self._faces(result)
