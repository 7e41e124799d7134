"""The one way argml decodes an image file it did not write itself, with limits checked before any pixel is
allocated.

A small file can hold a huge image: a 389 KB PNG of 20000 x 20000 zeros decodes into 1.2 GB. Every decode
therefore reads the header first (Pillow opens images lazily: it reads the size, not the pixels) and refuses
a file over `max_bytes` or an image over `max_pixels` (width x height) with an ImageError that names the
file and the limit. Only then does OpenCV decode it. The limits are the `decode` section of params.yaml;
OPENCV_IO_MAX_IMAGE_PIXELS is set to the same default as a backstop for decoders argml does not call.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DEFAULT_MAX_PIXELS = 50_000_000  # 50 megapixels: any camera photo; about 150 MB of decoded BGR pixels
DEFAULT_MAX_BYTES = 20 << 20  # 20 MB per file


class ImageError(ValueError):
    """An image that argml will not decode: missing, empty, too large, or not a readable JPEG/PNG."""


@dataclass(frozen=True)
class Limits:
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_bytes: int = DEFAULT_MAX_BYTES


def image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the file's header, without decoding its pixels; None when no header is readable."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.size
    except Exception:  # noqa: BLE001 - Pillow raises many kinds for a file it cannot identify
        return None


def check(data: bytes, name: str, limits: Limits = Limits()) -> None:
    """Raise ImageError when `data` is empty, over `limits.max_bytes`, or its header says over `limits.max_pixels`."""
    if not data:
        raise ImageError(f"{name}: empty file")
    if len(data) > limits.max_bytes:
        raise ImageError(f"{name}: {len(data):,} bytes is over the limit of {limits.max_bytes:,} bytes "
                         "(decode.max_bytes)")
    size = image_size(data)
    if size is not None and size[0] * size[1] > limits.max_pixels:
        raise ImageError(f"{name}: {size[0]}x{size[1]} = {size[0] * size[1]:,} pixels is over the limit of "
                         f"{limits.max_pixels:,} pixels (decode.max_pixels)")


def decode(data: bytes, name: str = "image", limits: Limits = Limits(), flags: int | None = None) -> np.ndarray:
    """The pixels of an encoded image (OpenCV's BGR by default; `flags`: a cv2.IMREAD_* value), after `check`.
    A JPEG cut short is refused (OpenCV would decode its missing part as grey and only print a warning)."""
    import cv2

    check(data, name, limits)
    if data[:2] == b"\xff\xd8" and not data.rstrip(b"\0\r\n").endswith(b"\xff\xd9"):
        raise ImageError(f"{name}: truncated JPEG (no end-of-image marker)")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR if flags is None else flags)
    if image is None or image.size == 0:
        raise ImageError(f"{name}: not a readable JPEG or PNG image")
    return image


def read(path: str | Path, limits: Limits = Limits(), flags: int | None = None) -> np.ndarray:
    """decode() of a file; a missing or unreadable file is an ImageError too. The size is checked before reading."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > limits.max_bytes:
            raise ImageError(f"{path}: {size:,} bytes is over the limit of {limits.max_bytes:,} bytes "
                             "(decode.max_bytes)")
        data = path.read_bytes()
    except OSError as error:
        raise ImageError(f"{path}: cannot be read ({error.strerror or error})") from None
    return decode(data, str(path), limits, flags)


def read_aligned(path: str | Path) -> np.ndarray:
    """An aligned face a pipeline stage wrote (BGR); a missing or unreadable one is an error, never a silent
    gap in a stage's output."""
    try:
        return read(path)
    except ImageError as error:
        raise FileNotFoundError(f"aligned image {path} is missing or unreadable ({error})") from None
