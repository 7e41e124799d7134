"""Shared parts of the property-based suite (tests/test_fuzz_*.py): Hypothesis profiles, strategies of bad input,
and the memory bound.

Profiles (ARGML_FUZZ selects one):
- `ci` (default): a fixed number of examples per target (EXAMPLES), derandomized, so CI is bounded and repeatable;
- `long`: LONG_FACTOR times as many, random, with Hypothesis' example database in $ARGML_CACHE/hypothesis:
      ARGML_FUZZ=long python -m pytest tests/test_fuzz_parsers.py tests/test_fuzz_served.py -q \\
          --hypothesis-show-statistics
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
from hypothesis import HealthCheck, settings, strategies as st
from hypothesis.database import DirectoryBasedExampleDatabase

from bad_inputs import PNG_SIGNATURE, png_header

PROFILE = os.environ.get("ARGML_FUZZ", "ci")
LONG_FACTOR = 20
EXAMPLES = {  # target -> examples per CI run
    "names": 500, "params": 300, "params_text": 200, "images": 300, "base64": 200, "archives": 100,
    "face_model_json": 60, "photo_model_json": 60, "predict_files": 15,
}

settings.register_profile("ci", derandomize=True, database=None, deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("long", deadline=None, print_blob=True,
                          database=DirectoryBasedExampleDatabase(
                              str(Path(os.environ.get("ARGML_CACHE", ".cache")) / "hypothesis")),
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile(PROFILE)


def examples(target: str) -> settings:
    count = EXAMPLES[target] * (LONG_FACTOR if PROFILE == "long" else 1)
    return settings(max_examples=count, suppress_health_check=list(HealthCheck))


# --- memory: the peak resident set size of this process, reset before a target runs ------------------------

def _status(field: str) -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field)) * 1024


def reset_peak_rss() -> int:
    """Reset the kernel's peak RSS of this process to its current RSS (Linux 4.0+); -> that RSS in bytes."""
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")
    return _status("VmRSS:")


def peak_rss() -> int:
    return _status("VmHWM:")


# --- images ------------------------------------------------------------------------------------------------

@st.composite
def valid_images(draw) -> bytes:
    """A small real JPEG or PNG: random size, channels, depth and encoder options (progressive, CMYK,
    palette, animated)."""
    from PIL import Image

    height, width = draw(st.integers(1, 48)), draw(st.integers(1, 48))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    kind = draw(st.sampled_from(["png", "png16", "png-alpha", "png-palette", "png-optimized", "apng", "jpeg",
                                 "jpeg-progressive", "jpeg-gray", "jpeg-cmyk"]))
    pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    if kind == "png":
        return cv2.imencode(".png", pixels)[1].tobytes()
    if kind == "png16":
        return cv2.imencode(".png", rng.integers(0, 65536, (height, width), dtype=np.uint16))[1].tobytes()
    if kind == "png-alpha":
        return cv2.imencode(".png", rng.integers(0, 256, (height, width, 4), dtype=np.uint8))[1].tobytes()
    if kind == "jpeg":
        return cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, draw(st.integers(1, 100))])[1].tobytes()
    buffer = io.BytesIO()
    picture = Image.fromarray(pixels)
    if kind == "png-palette":
        picture.convert("P").save(buffer, "PNG")
    elif kind == "png-optimized":
        picture.save(buffer, "PNG", optimize=True)
    elif kind == "apng":
        frames = [Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)) for _ in range(2)]
        picture.save(buffer, "PNG", save_all=True, append_images=frames)
    elif kind == "jpeg-progressive":
        picture.save(buffer, "JPEG", progressive=True)
    elif kind == "jpeg-gray":
        picture.convert("L").save(buffer, "JPEG")
    else:
        picture.convert("CMYK").save(buffer, "JPEG")
    return buffer.getvalue()


def with_dimensions(data: bytes, width: int, height: int, fix_crc: bool) -> bytes:
    """The same file claiming another size in its header (PNG IHDR, or a JPEG's start-of-frame)."""
    if data.startswith(PNG_SIGNATURE):
        ihdr = bytearray(data[16:29])
        ihdr[0:8] = struct.pack(">II", width % 2**32, height % 2**32)
        crc = struct.pack(">I", zlib.crc32(b"IHDR" + bytes(ihdr)) & 0xFFFFFFFF) if fix_crc else data[29:33]
        return data[:16] + bytes(ihdr) + crc + data[33:]
    for marker in (b"\xff\xc0", b"\xff\xc2"):
        at = data.find(marker)
        if at >= 0:
            return data[:at + 5] + struct.pack(">HH", height % 65536, width % 65536) + data[at + 9:]
    return data


@st.composite
def bad_images(draw) -> bytes:
    """What a decoder meets from outside: real files cut short, with flipped bytes, with a huge or zero size in
    the header, wrong magic, other formats, headers alone, or noise."""
    way = draw(st.sampled_from(["valid", "truncated", "flipped", "resized", "other-format", "header-only",
                                "magic-noise", "noise"]))
    if way == "noise":
        return draw(st.binary(max_size=2000))
    if way == "magic-noise":
        return draw(st.sampled_from([b"\xff\xd8\xff", PNG_SIGNATURE])) + draw(st.binary(max_size=2000))
    if way == "other-format":
        return draw(st.sampled_from([b"GIF89a", b"BM", b"II*\0", b"MM\0*", b"RIFF\0\0\0\0WEBP", b"P5\n",
                                     b"\0\0\0\x0cjP  ", b"#?RADIANCE\n"])) + draw(st.binary(max_size=500))
    if way == "header-only":
        return png_header(draw(st.integers(0, 2**31 - 1)), draw(st.integers(0, 2**31 - 1)),
                          draw(st.sampled_from([1, 2, 4, 8, 16, 3, 0])), draw(st.sampled_from([0, 2, 3, 4, 6, 1])))
    data = draw(valid_images())
    if way == "truncated":
        return data[:draw(st.integers(0, max(0, len(data) - 1)))]
    if way == "flipped":
        changed = bytearray(data)
        for _ in range(draw(st.integers(1, 8))):
            changed[draw(st.integers(0, len(changed) - 1))] = draw(st.integers(0, 255))
        return bytes(changed)
    if way == "resized":
        width = draw(st.one_of(st.just(0), st.integers(1, 70_000), st.integers(0, 2**32 - 1)))
        height = draw(st.one_of(st.just(0), st.integers(1, 70_000), st.integers(0, 2**32 - 1)))
        return with_dimensions(data, width, height, draw(st.booleans()))
    return data

