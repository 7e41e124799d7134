"""Test, benchmark and demo videos: real UTKFace faces on a background, entering, walking and leaving at known
frames.

`make_video` writes an .mp4 and returns the ground truth: which person is where in which frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from argml.core import images


@dataclass(frozen=True)
class Person:
    image: str  # path of a face image (e.g. a UTKFace crop)
    center: tuple[int, int]  # where the face sits (pixels) in the first frame
    visible: tuple[tuple[int, int], ...]  # [start, end) frame ranges when the person is in view
    size: int = 150  # face side in pixels
    end: tuple[int, int] | None = None  # where the face sits in the last frame: it walks there at a steady pace

    def in_view(self, frame: int) -> bool:
        return any(start <= frame < end for start, end in self.visible)

    def position(self, frame: int, frames: int) -> tuple[int, int]:
        """The face's centre in `frame` of a `frames`-long video (before the small sway `render` adds)."""
        if self.end is None or frames < 2:
            return self.center
        share = frame / (frames - 1)
        return (int(round(self.center[0] + share * (self.end[0] - self.center[0]))),
                int(round(self.center[1] + share * (self.end[1] - self.center[1]))))


def background(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A soft gradient with mild texture: something a camera might see behind people."""
    rng = np.random.default_rng(seed)
    x = np.linspace(0, 1, width)[None, :, None]
    y = np.linspace(0, 1, height)[:, None, None]
    base = 90 + 60 * x * np.array([1.0, 0.8, 0.5]) + 50 * y * np.array([0.4, 0.7, 1.0])
    texture = cv2.GaussianBlur(rng.normal(0, 12, (height, width, 3)), (0, 0), 3)
    return np.clip(base + texture, 0, 255).astype(np.uint8)


def render(people: list[Person], frame: int, canvas: np.ndarray, faces: dict[str, np.ndarray],
           frames: int = 1) -> np.ndarray:
    image = canvas.copy()
    for person in people:
        if not person.in_view(frame):
            continue
        face = faces[person.image]
        drift = int(round(3 * np.sin(frame / 7)))  # people are never perfectly still
        center = person.position(frame, frames)
        x = min(max(center[0] - person.size // 2 + drift, 0), image.shape[1] - person.size)
        y = min(max(center[1] - person.size // 2, 0), image.shape[0] - person.size)
        image[y:y + person.size, x:x + person.size] = face
    return image


def make_video(path: str | Path, people: list[Person], frames: int, size: tuple[int, int] = (640, 480),
               fps: float = 15.0, seed: int = 0) -> list[list[int]]:
    """Write the video; return, per frame, the indices of the people in view."""
    width, height = size
    faces = {}
    for person in people:
        image = images.read(person.image)  # argml's one decode path; an ImageError names the file
        faces[person.image] = cv2.resize(image, (person.size, person.size), interpolation=cv2.INTER_AREA)
    canvas = background(width, height, seed)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    truth = []
    for frame in range(frames):
        writer.write(render(people, frame, canvas, faces, frames))
        truth.append([index for index, person in enumerate(people) if person.in_view(frame)])
    writer.release()
    return truth
