"""argml.core.images, the one decode path: limits checked on the header before any pixel is allocated (a real
decompression bomb made here, peak memory measured in a child process), only JPEG and PNG, odd-but-valid files
decoded, and every reader of outside images going through it."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from argml.core import images
from bad_inputs import encoded, png_chunk, png_header, zeros_png

REPO = Path(__file__).resolve().parents[1]
BOMB_SIDE = 20000  # issue 25: 389 KB on disk, 400 million pixels, 1.2 GB once decoded as BGR


@functools.lru_cache(maxsize=None)
def bomb() -> bytes:
    return zeros_png(BOMB_SIDE, BOMB_SIDE)


# A child's peak RSS is its VmHWM: ru_maxrss survives execve on Linux, so a child forked from this test
# process (torch and TensorFlow loaded: about 1 GB) would start at this process's peak.
PEAK_RSS = "print('PEAK', next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM:')) / 1024)"


def child_peak_rss_mb(code: str, *args: str) -> tuple[float, str]:
    """Run `code` in a fresh Python (argml importable); -> (its peak RSS in MB, its stdout)."""
    wrapped = code + "\n" + PEAK_RSS + "\n"
    result = subprocess.run([sys.executable, "-c", wrapped, *args], capture_output=True, text=True, timeout=300,
                            cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr[-3000:]
    peak = float(result.stdout.rsplit("PEAK", 1)[1])
    return peak, result.stdout


def test_the_bomb_is_refused_on_its_header_naming_the_file_and_the_limit():
    data = bomb()
    assert 380_000 < len(data) < 400_000  # the 389 KB file
    with pytest.raises(images.ImageError) as refused:
        images.decode(data, "bomb.png")
    message = str(refused.value)
    assert message == ("bomb.png: 20000x20000 = 400,000,000 pixels is over the limit of 50,000,000 pixels "
                       "(decode.max_pixels)")
    assert refused.value.reason == "too-large"
    assert images.image_size(data) == (BOMB_SIDE, BOMB_SIDE)  # Pillow's own bomb check must not hide the size


def test_refusing_the_bomb_allocates_nothing_and_opencv_alone_would_have(tmp_path):
    (tmp_path / "bomb.png").write_bytes(bomb())
    refused = """
import sys
from argml.core import images
try:
    images.read(sys.argv[1])
except images.ImageError as error:
    print(error)
"""
    peak, output = child_peak_rss_mb(refused, str(tmp_path / "bomb.png"))
    assert "over the limit of 50,000,000 pixels" in output
    assert peak < 200, peak  # Python, NumPy, Pillow and OpenCV loaded; no pixels

    # The same file through plain OpenCV at its default limit (2^30 pixels): what argml's check prevents.
    unprotected = """
import os, sys
os.environ["OPENCV_IO_MAX_IMAGE_PIXELS"] = str(2 ** 30)
import cv2, numpy as np
image = cv2.imdecode(np.fromfile(sys.argv[1], np.uint8), cv2.IMREAD_COLOR)
print("decoded", image.shape)
"""
    peak, output = child_peak_rss_mb(unprotected, str(tmp_path / "bomb.png"))
    assert f"decoded ({BOMB_SIDE}, {BOMB_SIDE}, 3)" in output and peak > 1000, peak


def test_opencv_in_an_argml_process_refuses_beyond_the_ceiling_itself(tmp_path):
    """The backstop for a decode that does not come through argml.core.images: argml sets
    OPENCV_IO_MAX_IMAGE_PIXELS to the ceiling of decode.max_pixels before cv2 loads."""
    side = int(images.MAX_PIXELS_CEILING ** 0.5) + 1  # just over the ceiling
    (tmp_path / "big.png").write_bytes(zeros_png(side, side))
    code = """
import os, sys
import argml, cv2, numpy as np
print("limit", os.environ["OPENCV_IO_MAX_IMAGE_PIXELS"])
try:
    cv2.imdecode(np.fromfile(sys.argv[1], np.uint8), cv2.IMREAD_COLOR)
except cv2.error as error:
    print("refused", "CV_IO_MAX_IMAGE_PIXELS" in str(error))
"""
    peak, output = child_peak_rss_mb(code, str(tmp_path / "big.png"))
    assert f"limit {images.MAX_PIXELS_CEILING}" in output and "refused True" in output, output
    assert peak < 400, peak


def test_the_limits_are_settings_with_a_ceiling(tmp_path):
    from argml.core.config import ParamsError, load_params

    defaults = load_params(REPO / "params.yaml").decode
    assert defaults.limits() == images.Limits(50_000_000, 20 << 20) == images.Limits()
    params = tmp_path / "params.yaml"
    params.write_text("decode:\n  max_pixels: 1200\n  max_bytes: 5000\n")
    limits = load_params(params).decode.limits()
    small = cv2.imencode(".png", np.zeros((40, 30, 3), np.uint8))[1].tobytes()
    assert images.decode(small, "small.png", limits).shape == (40, 30, 3)  # 1,200 pixels: at the limit
    with pytest.raises(images.ImageError, match="41x30 = 1,230 pixels is over the limit of 1,200"):
        images.decode(cv2.imencode(".png", np.zeros((30, 41, 3), np.uint8))[1].tobytes(), "x.png", limits)
    with pytest.raises(images.ImageError, match="over the limit of 5,000 bytes"):
        images.decode(small + b"\0" * 5000, "padded.png", limits)
    params.write_text(f"decode:\n  max_pixels: {images.MAX_PIXELS_CEILING + 1}\n")
    with pytest.raises(ParamsError, match="decode.max_pixels must be between 1 and 178956970"):
        load_params(params)


def jpeg_bytes(shape=(24, 32, 3)) -> bytes:
    return cv2.imencode(".jpg", np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8))[1].tobytes()


@pytest.mark.parametrize("data, reason, message", [
    (b"", "empty", "empty file"),
    (b"GIF89a" + b"\0" * 40, "not-an-image", "not a readable JPEG or PNG image (it starts with b'GIF89a"),
    (b"RIFF\0\0\0\0WEBPVP8 ", "not-an-image", "not a readable JPEG or PNG image"),
    (b"BM" + b"\0" * 60, "not-an-image", "not a readable JPEG or PNG image"),
    (png_header(0, 0), "not-an-image", "not a readable PNG image (its header"),
    (b"\xff\xd8\xff\xe0" + b"\0" * 30, "not-an-image", "not a readable JPEG image (its header"),
    (jpeg_bytes()[:-300], "truncated", "truncated JPEG (no end-of-image marker)"),
    (png_header(64, 64) + png_chunk(b"IDAT", b"junk" * 5) + png_chunk(b"IEND", b""), "not-an-image",
     "not a readable PNG image (its data is damaged)"),
], ids=["empty", "gif", "webp", "bmp", "png-0x0", "jpeg-no-frame", "jpeg-truncated", "png-junk-data"])
def test_bad_files_are_refused_with_what_is_wrong(data, reason, message):
    with pytest.raises(images.ImageError) as refused:
        images.decode(data, "upload")
    assert refused.value.reason == reason
    assert str(refused.value).startswith("upload: ") and message in str(refused.value), str(refused.value)


def test_odd_but_valid_images_decode_to_bgr_bytes():
    rng = np.random.default_rng(1)
    gray16 = cv2.imencode(".png", np.full((10, 20), 60000, np.uint16))[1].tobytes()
    rgba = cv2.imencode(".png", rng.integers(0, 256, (10, 20, 4), dtype=np.uint8))[1].tobytes()
    cmyk = encoded(rng.integers(0, 256, (10, 20, 4), dtype=np.uint8), ".jpg", mode="CMYK")
    frames = [rng.integers(0, 256, (10, 20, 3), dtype=np.uint8) for _ in range(3)]
    animated = encoded(frames[0], ".png", save_all=True, append_images=[Image.fromarray(f) for f in frames[1:]])
    thin = cv2.imencode(".png", rng.integers(0, 256, (1, 500, 3), dtype=np.uint8))[1].tobytes()
    for name, data in {"16-bit": gray16, "alpha": rgba, "cmyk": cmyk, "animated": animated, "1xN": thin}.items():
        image = images.decode(data, name)
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3, name
    assert images.decode(thin, "1xN").shape == (1, 500, 3)
    assert images.decode(animated, "animated").shape == (10, 20, 3)
    assert images.decode(gray16, "16-bit").max() == 234  # 60000 / 257, the 8-bit value OpenCV gives


def test_a_missing_or_oversized_file_is_an_image_error(tmp_path):
    with pytest.raises(images.ImageError, match="cannot be read") as missing:
        images.read(tmp_path / "nothing.jpg")
    assert missing.value.reason == "missing"
    (tmp_path / "big.jpg").write_bytes(jpeg_bytes() + b"\0" * 100)
    with pytest.raises(images.ImageError, match="over the limit of 100 bytes"):
        images.read(tmp_path / "big.jpg", images.Limits(max_bytes=100))


def test_the_dataset_reader_decodes_through_it_without_changing_a_pixel(utkface_dir):
    """faces.decode_image (the align stage's reader) gives OpenCV's own pixels for real UTKFace files, and says
    empty / unreadable, with the reason, for what the decode path refuses."""
    from argml.data.faces import decode_image

    for name in sorted(os.listdir(utkface_dir))[::1000]:
        data = (utkface_dir / name).read_bytes()
        decoded = decode_image(data, name)
        direct = cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED), cv2.COLOR_BGR2RGB)
        assert decoded.problem == "" and np.array_equal(decoded.rgb, direct), name
    assert decode_image(b"").problem == "empty"
    refused = decode_image(bomb(), "bomb.png")
    assert refused.problem == "unreadable" and refused.rgb is None
    assert "over the limit of 50,000,000 pixels" in refused.reason


def test_align_files_counts_a_bomb_as_unreadable_and_aligns_the_rest(utkface_dir, tmp_path):
    from argml.data.faces import align_files

    raw = tmp_path / "raw"
    raw.mkdir()
    names = sorted(os.listdir(utkface_dir))[:2]
    for name in names:
        (raw / name).write_bytes((utkface_dir / name).read_bytes())
    (raw / "bomb.png").write_bytes(bomb())
    (tmp_path / "out").mkdir()
    status = align_files([*names, "bomb.png"], raw, tmp_path / "out", size=160, padding=0.25, workers=1)
    assert dict(zip(status["file"], status["status"]))["bomb.png"] == "unreadable"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == names


def test_live_image_sources_count_a_bomb_and_refuse_an_oversized_video(tmp_path, capsys):
    from argml.live.capture import frame_source

    folder = tmp_path / "frames"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), np.zeros((20, 30, 3), np.uint8))
    (folder / "b.png").write_bytes(bomb())
    frames, fps, stop = frame_source(str(folder))
    read = list(frames)
    assert [None if frame is None else frame.shape for frame in read] == [(20, 30, 3), None]
    assert "b.png: 20000x20000 = 400,000,000 pixels is over the limit" in capsys.readouterr().err

    video = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10, (64, 48))
    for _ in range(3):
        writer.write(np.zeros((48, 64, 3), np.uint8))
    writer.release()
    assert len(list(frame_source(str(video))[0])) == 3
    with pytest.raises(images.ImageError, match="frames of 64x48 = 3,072 pixels are over the limit of 3,000"):
        frame_source(str(video), images.Limits(max_pixels=3000))


def test_no_module_decodes_outside_images_but_the_decode_path():
    """Every cv2.imread/imdecode and Pillow open in argml's own code is in argml.core.images."""
    found = []
    for path in (REPO / "argml").rglob("*.py"):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if any(call in line for call in ("cv2.imread(", "cv2.imdecode(", "Image.open(", "ImageFile(")):
                found.append(f"{path.relative_to(REPO)}:{number}")
    assert found and all(place.startswith("argml/core/images.py:") for place in found), found
