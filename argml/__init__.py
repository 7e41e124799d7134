"""argml: age, race and gender from a face (FaceNet transfer learning, DVC + MLflow, live YOLO demo)."""

__version__ = "0.1.0"

import os as _os

# Quiet by default (a user may override any of these): TensorFlow's C++ start-up lines (oneDNN, CPU
# features, absl), and FFmpeg's per-packet complaints about a damaged video, which argml counts instead.
for _name, _value in {"TF_CPP_MIN_LOG_LEVEL": "2", "OPENCV_FFMPEG_LOGLEVEL": "-8", "OPENCV_LOG_LEVEL": "ERROR",
                      "MLFLOW_DISABLE_TELEMETRY": "true", "YOLO_OFFLINE": "1",
                      # OpenCV's own pixel limit, read once when cv2 loads: a backstop behind argml.core.images
                      # (its MAX_PIXELS_CEILING; OpenCV's default, 2^30, lets one PNG allocate 3 GB)
                      "OPENCV_IO_MAX_IMAGE_PIXELS": "178956970"}.items():
    _os.environ.setdefault(_name, _value)

from argml import _quiet  # noqa: E402

_quiet.install()
