"""Bad images made in the tests, byte by byte, independent of argml: the decompression bomb of issue 25 and the
odd-but-valid files a decoder must take or refuse cleanly."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_header(width: int, height: int, bit_depth: int = 8, colour_type: int = 0) -> bytes:
    """The signature and IHDR of a PNG (colour type 0: grayscale, 2: RGB, 6: RGBA)."""
    return PNG_SIGNATURE + png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0))


def zeros_png(width: int, height: int) -> bytes:
    """A valid grayscale PNG of zeros: 20000 x 20000 is 389 KB on disk and 400 million pixels."""
    compressor = zlib.compressobj(9)
    rows = b"\0" * (width + 1) * min(height, 1000)  # each row: filter byte 0, then the pixels
    parts, left = [], height
    while left:
        count = min(left, 1000)
        parts.append(compressor.compress(rows[:count * (width + 1)]))
        left -= count
    parts.append(compressor.flush())
    return png_header(width, height) + png_chunk(b"IDAT", b"".join(parts)) + png_chunk(b"IEND", b"")


def encoded(image: np.ndarray, kind: str = ".png", mode: str | None = None, **pillow_options) -> bytes:
    """An array as a file through Pillow (its mode from the array, or `mode`, e.g. CMYK), for what OpenCV
    cannot write."""
    from PIL import Image

    picture = Image.fromarray(image, mode=None) if mode is None else Image.frombytes(
        mode, image.shape[1::-1], image.tobytes())
    buffer = io.BytesIO()
    picture.save(buffer, format=kind.strip(".").upper().replace("JPG", "JPEG"), **pillow_options)
    return buffer.getvalue()
