"""The one way argml decodes an image file it did not write itself, with limits checked before any pixel is
allocated.

A small file can hold a huge image: a 389 KB PNG of 20000 x 20000 zeros decodes into 1.2 GB. Every decode
therefore reads the header first and refuses, with an ImageError that names the file and the limit:
- an empty file, or one over `max_bytes`;
- anything but a JPEG or a PNG (told by its first bytes, not its name): only those two decoders ever run;
- a header Pillow cannot read (Pillow's JPEG and PNG parsers read the size, not the pixels);
- an image over `max_pixels` (width x height);
- a JPEG cut short (no end-of-image marker: OpenCV would fill the missing part with grey and only warn).
Only then does OpenCV decode it. The limits are the `decode` section of params.yaml (DecodeParams). argml sets
OPENCV_IO_MAX_IMAGE_PIXELS to MAX_PIXELS_CEILING (argml/__init__.py) as a backstop for any decode that does
not come through here.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from argml.core.errors import BadInput

DEFAULT_MAX_PIXELS = 50_000_000  # 50 megapixels: any camera photo; about 150 MB of decoded BGR pixels
DEFAULT_MAX_BYTES = 20 << 20  # 20 MB per file
# The highest decode.max_pixels may be set to: Pillow's own bomb threshold (2 x Image.MAX_IMAGE_PIXELS), also
# OpenCV's limit in argml's processes (OPENCV_IO_MAX_IMAGE_PIXELS).
MAX_PIXELS_CEILING = 2 * 89_478_485
MAGIC = {b"\xff\xd8\xff": "JPEG", b"\x89PNG\r\n\x1a\n": "PNG"}


REASONS = ("empty", "missing", "too-large", "not-an-image", "truncated")


class ImageError(BadInput):
    """An image that argml will not decode; `reason` is one of REASONS."""

    def __init__(self, message: str, reason: str = "not-an-image"):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Limits:
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_bytes: int = DEFAULT_MAX_BYTES


def image_format(data: bytes) -> str | None:
    """JPEG or PNG by the file's first bytes; None for anything else."""
    return next((name for magic, name in MAGIC.items() if data.startswith(magic)), None)


def image_size(data: bytes, name: str = "image") -> tuple[int, int]:
    """(width, height) from a JPEG's or PNG's header, without decoding its pixels; ImageError otherwise.

    Pillow's format classes are used directly: Image.open would also apply Pillow's own bomb check, which
    raises without the size for images over its threshold."""
    from PIL import JpegImagePlugin, PngImagePlugin

    kind = image_format(data)
    if kind is None:
        raise ImageError(f"{name}: not a readable JPEG or PNG image (it starts with {data[:8]!r})")
    parser = JpegImagePlugin.JpegImageFile if kind == "JPEG" else PngImagePlugin.PngImageFile
    try:
        with parser(io.BytesIO(data)) as image:
            width, height = image.size
    except Exception as error:  # noqa: BLE001 - Pillow raises many kinds for a damaged header
        raise ImageError(f"{name}: not a readable {kind} image (its header: {error or type(error).__name__})")
    return width, height


def check(data: bytes, name: str = "image", limits: Limits = Limits()) -> tuple[int, int]:
    """Raise ImageError when `data` is empty, over `limits.max_bytes`, not a JPEG or PNG with a readable
    header, or over `limits.max_pixels`; -> (width, height)."""
    if not data:
        raise ImageError(f"{name}: empty file", "empty")
    if len(data) > limits.max_bytes:
        raise ImageError(f"{name}: {len(data):,} bytes is over the limit of {limits.max_bytes:,} bytes "
                         "(decode.max_bytes)", "too-large")
    width, height = image_size(data, name)
    if width * height > limits.max_pixels:
        raise ImageError(f"{name}: {width}x{height} = {width * height:,} pixels is over the limit of "
                         f"{limits.max_pixels:,} pixels (decode.max_pixels)", "too-large")
    if image_format(data) == "JPEG" and not data.rstrip(b"\0\r\n").endswith(b"\xff\xd9"):
        raise ImageError(f"{name}: truncated JPEG (no end-of-image marker)", "truncated")
    return width, height


def decode(data: bytes, name: str = "image", limits: Limits = Limits(), flags: int | None = None) -> np.ndarray:
    """The pixels of a JPEG or PNG file's bytes, after `check`: OpenCV's BGR uint8 by default, or what
    `flags` (a cv2.IMREAD_* value) asks for."""
    import cv2

    check(data, name, limits)
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR if flags is None else flags)
    except cv2.error:  # OpenCV 5 raises for some damaged files where 4 returned None
        image = None
    if image is None or image.size == 0:
        raise ImageError(f"{name}: not a readable {image_format(data)} image (its data is damaged)")
    return image


def read(path: str | Path, limits: Limits = Limits(), flags: int | None = None) -> np.ndarray:
    """decode() of a file; a missing or unreadable file is an ImageError too. The size is checked before reading."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > limits.max_bytes:
            raise ImageError(f"{path}: {size:,} bytes is over the limit of {limits.max_bytes:,} bytes "
                             "(decode.max_bytes)", "too-large")
        data = path.read_bytes()
    except OSError as error:
        raise ImageError(f"{path}: cannot be read ({error.strerror or error})", "missing") from None
    return decode(data, str(path), limits, flags)


def read_aligned(path: str | Path) -> np.ndarray:
    """An aligned face a pipeline stage wrote (BGR); a missing or unreadable one is an error, never a silent
    gap in a stage's output."""
    try:
        return read(path)
    except ImageError as error:
        raise FileNotFoundError(f"aligned image {path} is missing or unreadable ({error})") from None
