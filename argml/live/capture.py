"""Frames for the live loop: a webcam read by its own thread that keeps only the newest frame (a slow consumer
sees fresh frames), or a video file, an image or a folder of images read in order. Images are decoded with
argml's limits (argml.core.images: the `decode` section of params.yaml); an unreadable one is a None frame,
which the loop counts. A video whose frames are over the pixel limit is refused before its first frame."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np

from argml.core import images
from argml.core.errors import BadInput, NotFound, Unavailable
from argml.core.files import IMAGE_SUFFIXES


def _read_or_none(path: Path, limits: images.Limits):
    try:
        return images.read(path, limits)
    except images.ImageError as error:
        print(f"live: skipped {error}", file=sys.stderr)
        return None


class CameraReader(threading.Thread):
    """Reads a webcam continuously and keeps only the newest frame, so a slow consumer sees fresh frames."""

    def __init__(self, index: int, give_up_after: int = 30):
        super().__init__(name="argml-camera", daemon=True)
        self.capture = cv2.VideoCapture(index)
        if not self.capture.isOpened():
            raise Unavailable(f"camera {index} could not be opened (is it connected and free?)")
        self.give_up_after = give_up_after
        self.lock = threading.Lock()
        self.frame: np.ndarray | None = None
        self.sequence = 0
        self.stopped = threading.Event()
        self.lost = False

    def run(self):
        failures = 0
        while not self.stopped.is_set():
            ok, frame = self.capture.read()
            if not ok:
                failures += 1
                if failures >= self.give_up_after:
                    self.lost = True
                    break
                time.sleep(0.01)
                continue
            failures = 0
            with self.lock:
                self.frame, self.sequence = frame, self.sequence + 1
        self.capture.release()
        self.stopped.set()

    def frames(self):
        self.start()
        seen = 0
        while not self.stopped.is_set() or self.sequence > seen:
            with self.lock:
                frame, sequence = self.frame, self.sequence
            if sequence == seen:
                time.sleep(0.002)
                continue
            seen = sequence
            yield frame
        if self.lost:
            print("live: the camera stopped delivering frames (disconnected?); exiting", file=sys.stderr)

    def stop(self):
        self.stopped.set()


def frame_source(source: str, limits: images.Limits = images.Limits()):
    """(frames iterator, frames per second or None, stop callable). Unreadable images yield None."""
    if source.isdigit():
        camera = CameraReader(int(source))
        return camera.frames(), None, camera.stop
    path = Path(source)
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not found:
            raise NotFound(f"no images in {path}")
        return (_read_or_none(p, limits) for p in found), None, lambda: None
    if not path.exists():
        raise NotFound(f"source {source!r} is neither a camera index, a file nor a folder")
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return iter([_read_or_none(path, limits)]), None, lambda: None
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise BadInput(f"cannot open video {path} (a damaged file, or not a video OpenCV reads)")
    width, height = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
    if width * height > limits.max_pixels:
        capture.release()
        raise images.ImageError(f"{path}: frames of {width}x{height} = {width * height:,} pixels are over the "
                                f"limit of {limits.max_pixels:,} pixels (decode.max_pixels)", "too-large")
    fps = capture.get(cv2.CAP_PROP_FPS) or None

    def read():
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            yield frame
        capture.release()

    return read(), fps, capture.release
