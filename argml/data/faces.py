"""Face alignment: the one alignment used by the training data and by the live demo.

Dataset images are decoded through argml.core.images (the one decode path, with its limits).

A face box (from dlib's HOG detector on a dataset image, or from YOLO in the live demo) goes to dlib's
5-point landmark model; `dlib.get_face_chip` then rotates, scales and crops the face so the eyes and nose
land on dlib's canonical template, with `padding` margin, at `size` x `size` pixels (RGB uint8).

The landmark and detector models ship in the `face-recognition-models` wheel. Its `__init__` imports
pkg_resources, so the folder is located without importing the package.
"""

from __future__ import annotations

import importlib.util
import multiprocessing
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import dlib
import numpy as np
import pandas as pd
from tqdm import tqdm

from argml.core import images

# Where dlib's HOG detector puts the face on UTKFace's 200 x 200 aligned crops: the median box over 1,965
# detections in 2,000 random images (left, top, right, bottom as fractions of the side; the quartiles
# equal the median but for one). UTKFace faces are centred and of one scale, so when the detector finds
# nothing this box is a sound place for the landmark model to look.
UTKFACE_FALLBACK_BOX = (0.075, 0.075, 0.97, 0.97)


def dlib_model_path(name: str = "shape_predictor_5_face_landmarks.dat") -> Path:
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError("face-recognition-models is not installed (pip install face-recognition-models)")
    path = Path(spec.origin).parent / "models" / name
    if not path.exists():
        raise FileNotFoundError(f"dlib model {path} is missing from face-recognition-models")
    return path


@dataclass
class Decoded:
    rgb: np.ndarray | None  # H x W x 3 uint8, None when unreadable
    problem: str = ""  # "", "empty", "unreadable" (damaged, not a JPEG or PNG, or over the decode limits)
    grayscale: bool = False  # stored with one channel (converted to RGB)
    reason: str = ""  # why it is unreadable, naming the file


def decode_image(data: bytes, name: str = "image", limits: images.Limits = images.Limits()) -> Decoded:
    """Bytes -> RGB uint8 through argml.core.images (its limits, its refusals), tolerating grayscale, 16 bits
    and alpha; says what was wrong instead of raising."""
    try:
        image = images.decode(data, name, limits, cv2.IMREAD_UNCHANGED)
    except images.ImageError as error:
        return Decoded(None, "empty" if error.reason == "empty" else "unreadable", reason=str(error))
    if image.dtype != np.uint8:
        image = cv2.convertScaleAbs(image, alpha=255.0 / max(1, int(image.max())))
    if image.ndim == 2 or image.shape[2] == 1:
        return Decoded(cv2.cvtColor(image, cv2.COLOR_GRAY2RGB), grayscale=True)
    code = cv2.COLOR_BGRA2RGB if image.shape[2] == 4 else cv2.COLOR_BGR2RGB
    return Decoded(cv2.cvtColor(image, code))


class FaceAligner:
    """dlib landmarks + face chip. Not thread-safe: give each worker its own."""

    def __init__(self, size: int = 160, padding: float = 0.25, upsample: int = 0):
        if size < 16:
            raise ValueError(f"align size {size} is too small")
        self.size, self.padding, self.upsample = size, padding, upsample
        self.detector = dlib.get_frontal_face_detector()
        self.predictor = dlib.shape_predictor(str(dlib_model_path()))

    def detect(self, rgb: np.ndarray) -> dlib.rectangle | None:
        """The largest face dlib's HOG detector finds, or None."""
        boxes = self.detector(rgb, self.upsample)
        return max(boxes, key=lambda box: box.area()) if len(boxes) else None

    def align(self, rgb: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
        """The aligned chip (size x size x 3 uint8) of the face in `box` = (left, top, right, bottom) pixels."""
        left, top, right, bottom = (int(round(v)) for v in box)
        shape = self.predictor(rgb, dlib.rectangle(left, top, right, bottom))
        return dlib.get_face_chip(rgb, shape, size=self.size, padding=self.padding)

    def align_dataset_image(self, rgb: np.ndarray) -> tuple[np.ndarray, bool]:
        """(chip, face_found) for a pre-cropped dataset image; the fallback box stands in when none is found."""
        found = self.detect(rgb)
        if found is not None:
            box = (found.left(), found.top(), found.right(), found.bottom())
        else:
            height, width = rgb.shape[:2]
            box = tuple(f * side for f, side in zip(UTKFACE_FALLBACK_BOX, (width, height, width, height)))
        return self.align(rgb, box), found is not None


# --- aligning a whole dataset folder in worker processes -------------------------------------------------

_worker_aligner: FaceAligner | None = None
_worker_limits = images.Limits()


def _init_worker(size: int, padding: float, upsample: int, limits: images.Limits = images.Limits()) -> None:
    global _worker_aligner, _worker_limits
    cv2.setNumThreads(1)
    _worker_aligner, _worker_limits = FaceAligner(size, padding, upsample), limits


def _align_file(paths: tuple[str, str]) -> dict:
    source, target = paths
    decoded = decode_image(Path(source).read_bytes(), source, _worker_limits)
    row = {"file": Path(source).name, "status": decoded.problem or "aligned", "grayscale": decoded.grayscale}
    if decoded.rgb is None:
        print(f"align: skipped {decoded.reason}", file=sys.stderr)
        return row
    chip, found = _worker_aligner.align_dataset_image(decoded.rgb)
    if not found:
        row["status"] = "fallback"
    if not cv2.imwrite(target, cv2.cvtColor(chip, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95]):
        raise OSError(f"could not write {target}")
    return row


def align_files(names: list[str], raw_dir: str | Path, out_dir: str | Path, size: int, padding: float,
                upsample: int = 0, workers: int = 2, limits: images.Limits = images.Limits()) -> pd.DataFrame:
    """Align every named image of `raw_dir` into `out_dir` (same names), in `workers` processes; images are
    decoded within `limits` (argml.core.images).

    Returns one row per image: status aligned (face detected), fallback (no detection, so
    UTKFACE_FALLBACK_BOX was used), empty or unreadable (nothing written; the reason is printed on stderr);
    grayscale marks one-channel files.
    """
    jobs = [(str(Path(raw_dir) / name), str(Path(out_dir) / name)) for name in names]
    workers = workers or multiprocessing.cpu_count()
    progress = dict(total=len(jobs), desc="align", unit="img", mininterval=1)
    if workers == 1:
        _init_worker(size, padding, upsample, limits)
        return pd.DataFrame(list(tqdm(map(_align_file, jobs), **progress)))
    context = multiprocessing.get_context("spawn")  # forking a process with running threads is unsafe
    with context.Pool(workers, initializer=_init_worker, initargs=(size, padding, upsample, limits)) as pool:
        return pd.DataFrame(list(tqdm(pool.imap(_align_file, jobs, chunksize=64), **progress)))
