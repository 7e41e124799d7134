"""argml: age, race and gender from a face (FaceNet transfer learning, DVC + MLflow, live YOLO demo)."""

__version__ = "0.1.0"
