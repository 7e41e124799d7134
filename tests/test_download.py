"""argml.download: fetch the images from a folder, an archive or a URL; safe extraction; checked downloads."""

from __future__ import annotations

import hashlib
import http.server
import io
import os
import stat
import tarfile
import tempfile
import threading
import zipfile
from pathlib import Path

import pytest
import requests

from argml.data import download
from argml.data.download import ChecksumError, UnsafeArchiveError, fetch_dataset, safe_extract


def tree(folder: Path) -> list[str]:
    """Every path under `folder`, relative, sorted (links included, not followed)."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def make_tar_gz(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as bundle:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            bundle.addfile(info, io.BytesIO(data))
    return path


def make_zip(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as bundle:
        for name, data in files.items():
            bundle.writestr(zipfile.ZipInfo(name), data)
    return path


@pytest.fixture
def real_images(utkface_sample, utkface_dir):
    """{name: bytes} of 6 real images, one of them the real name with a space before its extension."""
    sample = utkface_sample(5, odd=False, pairs=0)
    data = {name: (sample.dir / name).read_bytes() for name in sample.files}
    typo = "24_0_1_20170116220224657 .jpg.chip.jpg"
    data[typo] = (utkface_dir / typo).read_bytes()
    return data


@pytest.fixture
def no_proxy(monkeypatch):
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


# --- from a folder or a local archive ---------------------------------------------------------------------

def test_fetch_from_folder_copies_only_images_flat(real_images, tmp_path):
    source = tmp_path / "source"
    (source / "nested" / "deeper").mkdir(parents=True)
    names = list(real_images)
    for name in names[:4]:
        (source / name).write_bytes(real_images[name])
    for name in names[4:]:
        (source / "nested" / "deeper" / name).write_bytes(real_images[name])
    (source / "README.txt").write_text("UTKFace")
    (source / ".DS_Store").write_bytes(b"\0\0")
    (source / "nested" / f"._{names[0]}").write_bytes(b"AppleDouble")  # macOS resource fork, image-like name
    (source / "labels.csv").write_text("a,b\n")

    out = tmp_path / "raw"
    report = fetch_dataset(out, source=str(source))

    assert report == {"images": 6, "skipped_non_images": 4, "source": "ARGML_UTKFACE"}
    assert tree(out) == sorted(names)
    for name, data in real_images.items():
        assert (out / name).read_bytes() == data


def test_fetch_reads_the_env_var_by_default(real_images, tmp_path, monkeypatch):
    source = tmp_path / "source"
    source.mkdir()
    for name, data in real_images.items():
        (source / name).write_bytes(data)
    monkeypatch.setenv("ARGML_UTKFACE", str(source))
    report = fetch_dataset(tmp_path / "raw")
    assert report["images"] == len(real_images)
    assert tree(tmp_path / "raw") == sorted(real_images)


def test_fetch_replaces_an_old_output_folder(real_images, tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    for name, data in real_images.items():
        (source / name).write_bytes(data)
    out = tmp_path / "raw"
    out.mkdir()
    (out / "stale.jpg").write_bytes(b"old")
    fetch_dataset(out, source=str(source))
    assert tree(out) == sorted(real_images)
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".raw")], "no staging folder left behind"


def test_fetch_refuses_two_images_with_one_name(real_images, tmp_path):
    source = tmp_path / "source"
    name, data = next(iter(real_images.items()))
    for sub in ("a", "b"):
        (source / sub).mkdir(parents=True)
        (source / sub / name).write_bytes(data)
    with pytest.raises(ValueError, match="two images named"):
        fetch_dataset(tmp_path / "raw", source=str(source))
    assert not (tmp_path / "raw").exists()


def test_fetch_from_folder_without_images(tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    (source / "notes.txt").write_text("x")
    with pytest.raises(FileNotFoundError, match="no image files"):
        fetch_dataset(tmp_path / "raw", source=str(source))
    assert not (tmp_path / "raw").exists()


@pytest.mark.parametrize("kind", ["tar.gz", "zip"])
def test_fetch_from_archive(real_images, tmp_path, kind):
    files = {f"UTKFace/{name}": data for name, data in real_images.items()}
    files["UTKFace/LICENSE.txt"] = b"non-commercial research only"
    archive = tmp_path / f"utkface.{kind}"
    (make_tar_gz if kind == "tar.gz" else make_zip)(archive, files)

    out = tmp_path / "raw"
    report = fetch_dataset(out, source=str(archive))

    assert report == {"images": len(real_images), "skipped_non_images": 1, "source": "ARGML_UTKFACE"}
    assert tree(out) == sorted(real_images)
    for name, data in real_images.items():
        assert (out / name).read_bytes() == data


def test_fetch_from_a_path_that_is_not_a_folder_or_archive(tmp_path):
    with pytest.raises(FileNotFoundError, match="ARGML_UTKFACE"):
        fetch_dataset(tmp_path / "raw", source=str(tmp_path / "missing"))
    (tmp_path / "data.rar").write_bytes(b"Rar!")
    with pytest.raises(FileNotFoundError, match="ARGML_UTKFACE"):
        fetch_dataset(tmp_path / "raw", source=str(tmp_path / "data.rar"))
    assert not (tmp_path / "raw").exists()


def test_no_source_names_both_ways_to_give_one(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        fetch_dataset(tmp_path / "raw", url="", sha256="", source="")
    assert "ARGML_UTKFACE" in str(error.value) and "download.url" in str(error.value)
    assert not (tmp_path / "raw").exists()


def test_url_without_sha256_is_refused(tmp_path):
    with pytest.raises(ValueError, match="sha256"):
        fetch_dataset(tmp_path / "raw", url="http://127.0.0.1:9/x.tar.gz", sha256="", source="")
    assert not (tmp_path / "raw").exists()


# --- safe_extract ------------------------------------------------------------------------------------------

@pytest.fixture
def arena(tmp_path):
    """(archive folder, extraction target, root): nothing may appear under root outside those two."""
    archives, target = tmp_path / "archives", tmp_path / "work" / "target"
    archives.mkdir()
    return archives, target, tmp_path


def assert_nothing_escaped(root: Path):
    outside = [p for p in tree(root) if not p.startswith(("archives", "work/target")) and p != "work"]
    assert outside == [], f"written outside the target: {outside}"


def test_tar_with_parent_member_is_refused_before_anything_is_written(arena):
    archives, target, root = arena
    archive = make_tar_gz(archives / "a.tar.gz", {"good.jpg": b"fine", "../evil": b"pwned", "z.jpg": b"x"})
    with pytest.raises(UnsafeArchiveError, match="evil"):
        safe_extract(archive, target)
    assert_nothing_escaped(root)
    assert tree(target) == [], "a refused archive must not be half extracted"


def test_tar_with_absolute_member_never_writes_outside(arena):
    archives, target, root = arena
    victim = root / "victim" / "evil"
    archive = make_tar_gz(archives / "a.tar.gz", {str(victim): b"pwned"})
    with pytest.raises(UnsafeArchiveError, match="has an absolute path"):
        safe_extract(archive, target)
    assert not victim.exists()
    assert_nothing_escaped(root)


def test_tar_with_absolute_member_is_refused(arena):
    archives, target, root = arena
    archive = make_tar_gz(archives / "a.tar.gz", {str(root / "victim" / "evil"): b"pwned"})
    with pytest.raises(UnsafeArchiveError):
        safe_extract(archive, target)


@pytest.mark.parametrize("link_target", ["../../outside", "/etc/passwd"])
def test_tar_with_symlink_pointing_outside_is_refused(arena, link_target):
    archives, target, root = arena
    archive = archives / "a.tar"
    with tarfile.open(archive, "w") as bundle:
        info = tarfile.TarInfo("link")
        info.type, info.linkname = tarfile.SYMTYPE, link_target
        bundle.addfile(info)
        data = b"through the link"
        info = tarfile.TarInfo("link/file")
        info.size = len(data)
        bundle.addfile(info, io.BytesIO(data))
    with pytest.raises(UnsafeArchiveError):
        safe_extract(archive, target)
    assert tree(target) == []
    assert_nothing_escaped(root)


@pytest.mark.parametrize("bad_name", ["../evil", "a/../../evil", "/abs/evil"])
def test_zip_with_escaping_member_is_refused(arena, bad_name):
    archives, target, root = arena
    archive = make_zip(archives / "a.zip", {"good.jpg": b"fine", bad_name: b"pwned"})
    with pytest.raises(UnsafeArchiveError, match="escape"):
        safe_extract(archive, target)
    assert tree(target) == []
    assert_nothing_escaped(root)


def test_zip_with_symlink_member_is_refused(arena):
    archives, target, root = arena
    archive = archives / "a.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        info = zipfile.ZipInfo("link")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        bundle.writestr(info, "../../outside")
    with pytest.raises(UnsafeArchiveError, match="link"):
        safe_extract(archive, target)
    assert tree(target) == []


def test_safe_extract_rejects_something_that_is_not_an_archive(arena):
    archives, target, _ = arena
    (archives / "x.tar.gz").write_bytes(b"not an archive at all")
    with pytest.raises(ValueError, match="neither"):
        safe_extract(archives / "x.tar.gz", target)


# --- HTTP --------------------------------------------------------------------------------------------------

class _Handler(http.server.BaseHTTPRequestHandler):
    payload = b""
    failures_left = 0  # answer 503 this many times first
    hits: list

    def do_GET(self):  # noqa: N802 (http.server's name)
        type(self).hits.append(self.path)
        if self.path != "/utkface.tar.gz":
            self.send_error(404)
            return
        if type(self).failures_left > 0:
            type(self).failures_left -= 1
            body = b"busy"
            self.send_response(503)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/gzip")
        self.send_header("Content-Length", str(len(self.payload)))
        self.end_headers()
        self.wfile.write(self.payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def serve(no_proxy):
    """serve(payload, failures=0) -> (base url, handler class); a threaded server on 127.0.0.1, any free port."""
    servers = []

    def start(payload: bytes, failures: int = 0):
        handler = type("Handler", (_Handler,), {"payload": payload, "failures_left": failures, "hits": []})
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        servers.append((server, thread))
        return f"http://127.0.0.1:{server.server_address[1]}", handler

    yield start
    for server, thread in servers:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def archive_bytes(real_images, tmp_path):
    path = make_tar_gz(tmp_path / "utkface.tar.gz", {f"UTKFace/{n}": d for n, d in real_images.items()})
    return path.read_bytes()


@pytest.fixture
def private_tmp(tmp_path, monkeypatch):
    """Point tempfile at a folder of our own, to see what a failed download leaves behind."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    return scratch


def test_http_download_with_right_sha256(serve, archive_bytes, real_images, tmp_path, private_tmp):
    url, handler = serve(archive_bytes)
    digest = hashlib.sha256(archive_bytes).hexdigest()
    out = tmp_path / "raw"
    report = fetch_dataset(out, url=f"{url}/utkface.tar.gz", sha256=digest.upper(), source="")
    assert report == {"images": len(real_images), "skipped_non_images": 0, "source": "download.url"}
    assert tree(out) == sorted(real_images)
    assert all((out / n).read_bytes() == d for n, d in real_images.items())
    assert handler.hits == ["/utkface.tar.gz"]
    assert list(private_tmp.iterdir()) == [], "the scratch folder must be cleaned up"


def test_http_download_with_wrong_sha256_keeps_nothing(serve, archive_bytes, tmp_path, private_tmp):
    url, _ = serve(archive_bytes)
    out = tmp_path / "data" / "raw"
    wrong = hashlib.sha256(b"something else").hexdigest()
    with pytest.raises(ChecksumError) as error:
        fetch_dataset(out, url=f"{url}/utkface.tar.gz", sha256=wrong, source="")
    assert wrong in str(error.value) and hashlib.sha256(archive_bytes).hexdigest() in str(error.value)
    assert not out.exists()
    assert list(out.parent.iterdir()) == [], "no staging folder may be left beside the output"
    assert list(private_tmp.iterdir()) == []


def test_download_file_wrong_sha256_leaves_no_file(serve, archive_bytes, tmp_path):
    url, _ = serve(archive_bytes)
    dest = tmp_path / "dl" / "archive.tar.gz"
    with pytest.raises(ChecksumError):
        download.download_file(f"{url}/utkface.tar.gz", dest, sha256="0" * 64)
    assert list(dest.parent.iterdir()) == []


def test_http_download_retries_through_503(serve, archive_bytes, real_images, tmp_path):
    url, handler = serve(archive_bytes, failures=2)
    digest = hashlib.sha256(archive_bytes).hexdigest()
    report = fetch_dataset(tmp_path / "raw", url=f"{url}/utkface.tar.gz", sha256=digest, source="")
    assert report["images"] == len(real_images)
    assert handler.hits == ["/utkface.tar.gz"] * 3
    assert tree(tmp_path / "raw") == sorted(real_images)


def test_http_download_gives_up_when_the_server_stays_busy(serve, archive_bytes, tmp_path):
    """A server that answers 503 every time: the first request and urllib3's two retries (download_file's
    session), then the error, which is an OSError, so a command says it in one line."""
    url, handler = serve(archive_bytes, failures=100)
    with pytest.raises(requests.exceptions.RetryError, match="too many 503 error responses") as error:
        fetch_dataset(tmp_path / "raw", url=f"{url}/utkface.tar.gz",
                      sha256=hashlib.sha256(archive_bytes).hexdigest(), source="")
    assert isinstance(error.value, OSError)
    assert not (tmp_path / "raw").exists()
    assert handler.hits == ["/utkface.tar.gz"] * 3


def test_http_404_raises_and_keeps_nothing(serve, archive_bytes, tmp_path):
    url, _ = serve(archive_bytes)
    dest = tmp_path / "dl" / "archive.tar.gz"
    with pytest.raises(requests.HTTPError):
        download.download_file(f"{url}/missing.tar.gz", dest, sha256="")
    assert list(dest.parent.iterdir()) == []


def test_download_file_without_sha256_just_downloads(serve, archive_bytes, tmp_path):
    url, _ = serve(archive_bytes)
    dest = download.download_file(f"{url}/utkface.tar.gz", tmp_path / "a.tar.gz")
    assert dest.read_bytes() == archive_bytes
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".a.tar.gz")], "no staging file left behind"
