"""argml.detect: detector files are loaded without running code from them, and downloaded detectors are
cached per URL and checked against their sha256 on every use."""

from __future__ import annotations

from argml.serving import detect  # first: torchvision before TensorFlow (see argml.serving.detect)

import hashlib  # noqa: E402
import http.server  # noqa: E402
import os  # noqa: E402
import threading  # noqa: E402
from functools import partial  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from argml.data.download import ChecksumError  # noqa: E402


@pytest.fixture(scope="module")
def detector_bytes():
    path = os.environ.get("ARGML_YOLO_FACE", "")
    if not Path(path).is_file():
        pytest.skip("ARGML_YOLO_FACE is not set to a YOLO face model (e.g. ../shared/models/yolov8n-face_int8.tflite)")
    return Path(path).read_bytes()


class Payload:
    """Unpickling this runs code: it creates the folder `marker`."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


def test_a_crafted_pt_is_refused_without_running_its_code(tmp_path):
    import torch

    marker = tmp_path / "code-ran"
    torch.save({"model": Payload(marker), "train_args": {}}, tmp_path / "face.pt")
    with pytest.raises(ValueError, match="could not be loaded as an Ultralytics YOLO model"):
        detect.FaceDetector(detect.resolve_detector(str(tmp_path / "face.pt")))
    assert not marker.exists(), "loading the detector ran code from the file"


def test_junk_files_get_one_clear_error(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"this is not a model\n" * 10)
    with pytest.raises(ValueError, match=r"junk\.pt could not be loaded .*refused or damaged"):
        detect.FaceDetector(tmp_path / "junk.pt")
    (tmp_path / "model.pkl").write_bytes(b"x")
    with pytest.raises(ValueError, match=r"one of \.onnx, \.tflite, \.pt"):
        detect.resolve_detector(str(tmp_path / "model.pkl"))
    with pytest.raises(ValueError, match="only http"):
        detect.resolve_detector("ftp://example.invalid/face.tflite")


@pytest.fixture
def served(tmp_path, monkeypatch):
    """(base URL, folder, requests seen): a file server on 127.0.0.1 over `folder`; the cache in tmp_path."""
    folder = tmp_path / "served"
    folder.mkdir()
    seen = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            seen.append(self.path)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("ARGML_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    yield f"http://127.0.0.1:{server.server_port}", folder, seen
    server.shutdown()
    server.server_close()
    thread.join(5)


def test_a_url_is_downloaded_once_and_checked_on_every_use(served, detector_bytes):
    base, folder, seen = served
    (folder / "face.tflite").write_bytes(detector_bytes)
    digest = hashlib.sha256(detector_bytes).hexdigest()
    url = f"{base}/face.tflite"
    with pytest.raises(ChecksumError):
        detect.resolve_detector(url, sha256="0" * 64)
    first = detect.resolve_detector(url, sha256=digest)
    second = detect.resolve_detector(url, sha256=digest)
    third = detect.resolve_detector(url)  # no hash given: the one recorded at download is checked
    assert first == second == third and first.read_bytes() == detector_bytes
    assert len(seen) == 2, seen  # the refused download and one good one
    with pytest.raises(ChecksumError):  # a wrong hash on a cache hit is not waved through
        detect.resolve_detector(url, sha256="1" * 64)
    assert len(seen) == 2
    assert detect.FaceDetector(first).detect(np.zeros((480, 640, 3), np.uint8)) == []

    first.write_bytes(detector_bytes[:-10] + b"tampered!!")
    with pytest.raises(ChecksumError):
        detect.resolve_detector(url)


def test_another_url_with_the_same_file_name_is_fetched(served, detector_bytes):
    base, folder, seen = served
    (folder / "a").mkdir()
    (folder / "b").mkdir()
    (folder / "a" / "face.tflite").write_bytes(detector_bytes)
    (folder / "b" / "face.tflite").write_bytes(detector_bytes[:100])
    one = detect.resolve_detector(f"{base}/a/face.tflite")
    other = detect.resolve_detector(f"{base}/b/face.tflite")
    assert one != other and other.read_bytes() == detector_bytes[:100]
    assert seen == ["/a/face.tflite", "/b/face.tflite"]


def test_a_missing_url_is_one_clear_error(served):
    base, _, _ = served
    with pytest.raises(RuntimeError, match=r"could not be downloaded: 404"):
        detect.resolve_detector(f"{base}/missing.tflite")


def test_a_local_file_is_checked_when_a_hash_is_given(tmp_path, detector_bytes):
    path = tmp_path / "face.tflite"
    path.write_bytes(detector_bytes)
    assert detect.resolve_detector(str(path), hashlib.sha256(detector_bytes).hexdigest()) == path
    with pytest.raises(ChecksumError):
        detect.resolve_detector(str(path), "0" * 64)
