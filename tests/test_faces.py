"""argml.faces: decoding odd image bytes, dlib alignment of real UTKFace faces, aligning a folder in workers."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from argml.data import faces
from argml.data.faces import FaceAligner, decode_image


@pytest.fixture(scope="module")
def aligner():
    return FaceAligner(size=160, padding=0.25)


@pytest.fixture
def twelve(utkface_sample):
    return utkface_sample(12, odd=False, pairs=0, name="faces")


def rgb_of(path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


# --- decode_image ------------------------------------------------------------------------------------------

def test_decode_real_jpeg_is_rgb(twelve):
    path = twelve.dir / twelve.files[0]
    decoded = decode_image(path.read_bytes())
    assert decoded.problem == "" and not decoded.grayscale
    assert decoded.rgb.shape == (200, 200, 3) and decoded.rgb.dtype == np.uint8
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert np.array_equal(decoded.rgb, bgr[:, :, ::-1]), "channels must come back in RGB order"


def test_decode_empty_bytes():
    decoded = decode_image(b"")
    assert decoded.rgb is None and decoded.problem == "empty"


@pytest.mark.parametrize("data", [b"\x00" * 64, b"this is not an image", b"\xff\xd8\xff\xe0 truncated jpeg"])
def test_decode_garbage_is_unreadable(data):
    decoded = decode_image(data)
    assert decoded.rgb is None and decoded.problem == "unreadable"


@pytest.mark.parametrize("ext", [".png", ".jpg"])
def test_decode_grayscale_gives_three_equal_channels(twelve, ext):
    gray = cv2.cvtColor(cv2.imread(str(twelve.dir / twelve.files[1])), cv2.COLOR_BGR2GRAY)
    ok, encoded = cv2.imencode(ext, gray)
    assert ok
    decoded = decode_image(encoded.tobytes())
    assert decoded.grayscale and decoded.problem == ""
    assert decoded.rgb.shape == (200, 200, 3) and decoded.rgb.dtype == np.uint8
    assert np.array_equal(decoded.rgb[..., 0], decoded.rgb[..., 1])
    assert np.array_equal(decoded.rgb[..., 1], decoded.rgb[..., 2])
    if ext == ".png":  # lossless: the grey values survive exactly
        assert np.array_equal(decoded.rgb[..., 0], gray)


def test_decode_rgba_png_drops_alpha_and_keeps_colour(twelve):
    bgr = cv2.imread(str(twelve.dir / twelve.files[2]), cv2.IMREAD_COLOR)
    bgra = cv2.cvtColor(bgr, cv2.COLOR_BGR2BGRA)
    bgra[..., 3] = 128
    ok, encoded = cv2.imencode(".png", bgra)
    assert ok
    decoded = decode_image(encoded.tobytes())
    assert not decoded.grayscale and decoded.problem == ""
    assert decoded.rgb.shape == (200, 200, 3)
    assert np.array_equal(decoded.rgb, bgr[:, :, ::-1])


def test_decode_16_bit_png_becomes_uint8(twelve):
    bgr = cv2.imread(str(twelve.dir / twelve.files[3]), cv2.IMREAD_COLOR)
    ok, encoded = cv2.imencode(".png", bgr.astype(np.uint16) * 257)
    assert ok
    decoded = decode_image(encoded.tobytes())
    assert decoded.rgb.dtype == np.uint8 and decoded.rgb.shape == (200, 200, 3)
    assert np.abs(decoded.rgb.astype(int) - bgr[:, :, ::-1]).max() <= 1


# --- FaceAligner -------------------------------------------------------------------------------------------

def test_dlib_model_ships_with_the_wheel():
    assert faces.dlib_model_path().is_file()


def test_aligner_on_real_faces(aligner, twelve):
    found = 0
    for name in twelve.files:
        rgb = decode_image((twelve.dir / name).read_bytes()).rgb
        chip, detected = aligner.align_dataset_image(rgb)
        assert chip.shape == (160, 160, 3) and chip.dtype == np.uint8
        assert chip.std() > 10, f"{name}: the chip is flat, not a face"
        found += detected
    assert found >= 9, f"dlib found a face in only {found} of 12 real UTKFace images"


def test_aligner_is_deterministic(aligner, twelve):
    rgb = decode_image((twelve.dir / twelve.files[0]).read_bytes()).rgb
    assert np.array_equal(aligner.align_dataset_image(rgb)[0], aligner.align_dataset_image(rgb)[0])


def test_fallback_box_when_no_face(aligner, twelve):
    """A flat grey image has no face: the fallback box still gives a chip of the right size."""
    chip, detected = aligner.align_dataset_image(np.full((200, 200, 3), 127, np.uint8))
    assert not detected
    assert chip.shape == (160, 160, 3)


@pytest.mark.parametrize("size", [96, 160, 224])
def test_aligned_size_follows_the_size_param(twelve, size):
    rgb = decode_image((twelve.dir / twelve.files[0]).read_bytes()).rgb
    chip, _ = FaceAligner(size=size).align_dataset_image(rgb)
    assert chip.shape == (size, size, 3)


def test_padding_changes_the_crop(aligner, twelve):
    rgb = decode_image((twelve.dir / twelve.files[0]).read_bytes()).rgb
    tight, _ = FaceAligner(size=160, padding=0.1).align_dataset_image(rgb)
    loose, _ = FaceAligner(size=160, padding=0.5).align_dataset_image(rgb)
    assert not np.array_equal(tight, loose)


def test_too_small_size_is_refused():
    with pytest.raises(ValueError):
        FaceAligner(size=8)


# --- align_files -------------------------------------------------------------------------------------------

@pytest.fixture
def raw_folder(twelve):
    (twelve.dir / "empty.jpg.chip.jpg").write_bytes(b"")
    (twelve.dir / "garbage.jpg.chip.jpg").write_bytes(b"definitely not a jpeg" * 10)
    gray = cv2.cvtColor(cv2.imread(str(twelve.dir / twelve.files[0])), cv2.COLOR_BGR2GRAY)
    cv2.imwrite(str(twelve.dir / "grey.png"), gray)
    names = twelve.files + ["empty.jpg.chip.jpg", "garbage.jpg.chip.jpg", "grey.png"]
    return twelve, names


@pytest.mark.parametrize("workers", [1, 2])
def test_align_files(raw_folder, tmp_path, workers):
    twelve, names = raw_folder
    out = tmp_path / f"aligned{workers}"
    out.mkdir()
    status = faces.align_files(names, twelve.dir, out, size=128, padding=0.25, workers=workers)

    assert status["file"].tolist() == names, "one row per image, in order"
    by_file = status.set_index("file")
    assert by_file.loc["empty.jpg.chip.jpg", "status"] == "empty"
    assert by_file.loc["garbage.jpg.chip.jpg", "status"] == "unreadable"
    assert bool(by_file.loc["grey.png", "grayscale"]) and by_file.loc["grey.png", "status"] in ("aligned", "fallback")
    real = by_file.loc[twelve.files]
    assert set(real["status"]) <= {"aligned", "fallback"}
    assert (real["status"] == "aligned").sum() >= 9
    assert not real["grayscale"].any()

    written = sorted(p.name for p in out.iterdir())
    assert written == sorted(twelve.files + ["grey.png"]), "only readable images are written"
    for name in written:
        image = cv2.imread(str(out / name), cv2.IMREAD_UNCHANGED)
        assert image.shape == (128, 128, 3), name


def test_align_files_same_result_with_one_or_two_workers(twelve, tmp_path):
    names = twelve.files[:6]
    outputs = {}
    for workers in (1, 2):
        out = tmp_path / str(workers)
        out.mkdir()
        status = faces.align_files(names, twelve.dir, out, size=160, padding=0.25, workers=workers)
        outputs[workers] = (status, {n: rgb_of(out / n) for n in names})
    assert outputs[1][0].equals(outputs[2][0])
    for name in names:
        assert np.array_equal(outputs[1][1][name], outputs[2][1][name]), name
