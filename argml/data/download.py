"""Get the UTKFace images: from a local folder or archive (ARGML_UTKFACE), or from a URL with a sha256.

Also the checked HTTP download and the safe archive extraction that other modules reuse (e.g. a YOLO model
given by URL). Only image files land in the output folder, flat.
"""

from __future__ import annotations

import gzip
import lzma
import os
import re
import shutil
import stat
import tarfile
import tempfile
import time
import zipfile
import zlib
from pathlib import Path, PurePosixPath

import requests
from requests.adapters import HTTPAdapter
from tqdm import tqdm
from urllib3.util.retry import Retry

from argml.core.errors import BadInput, ChecksumError, NotFound, Unavailable
from argml.core.files import atomic_dir, atomic_path, file_digest, is_image_name

ENV_DATASET = "ARGML_UTKFACE"
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip")
MAX_EXTRACTED_BYTES = 8 << 30  # UTKFace's images are about 0.1 GB
# What tarfile, zipfile and the decompressors raise for an archive cut short or corrupted.
DAMAGED_ARCHIVE = (tarfile.ReadError, tarfile.CompressionError, zipfile.BadZipFile, EOFError, zlib.error,
                   lzma.LZMAError, gzip.BadGzipFile)


__all__ = ["ChecksumError", "UnsafeArchiveError", "download_file", "safe_extract", "fetch_dataset"]


class UnsafeArchiveError(BadInput):
    """An archive member that would land outside the target folder, or a link."""


def _session(retries: int) -> requests.Session:
    session = requests.Session()
    retry = Retry(total=retries, backoff_factor=0.5, status_forcelist=(429, 500, 502, 503, 504))
    session.mount("http://", HTTPAdapter(max_retries=retry))
    session.mount("https://", HTTPAdapter(max_retries=retry))
    return session


def download_file(url: str, dest: str | Path, sha256: str = "", attempts: int = 3, timeout: float = 30) -> Path:
    """Stream `url` to `dest` with a progress bar; retry broken transfers; verify sha256 when given.

    On a checksum mismatch nothing is kept and ChecksumError names both digests.
    """
    dest = Path(dest)
    session = _session(retries=2)
    for attempt in range(1, attempts + 1):
        try:
            with atomic_path(dest) as staging:
                with session.get(url, stream=True, timeout=timeout) as response:
                    response.raise_for_status()
                    total = int(response.headers.get("content-length", 0)) or None
                    with open(staging, "wb") as out, tqdm(total=total, unit="B", unit_scale=True,
                                                          desc=f"download {dest.name}") as bar:
                        for chunk in response.iter_content(chunk_size=1 << 20):
                            out.write(chunk)
                            bar.update(len(chunk))
                actual = file_digest(staging, "sha256")
                if sha256 and actual != sha256.lower():
                    raise ChecksumError(f"sha256 of {url} is {actual}, expected {sha256.lower()}; file discarded")
            return dest
        except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as error:
            if attempt == attempts:
                raise Unavailable(f"download of {url} failed after {attempts} attempts: {error}") from error
            time.sleep(attempt)
    raise AssertionError("unreachable")


def _check_zip_member(info: zipfile.ZipInfo) -> None:
    path = PurePosixPath(info.filename.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or (path.parts and ":" in path.parts[0]):
        raise UnsafeArchiveError(f"archive member {info.filename!r} would escape the target folder")
    if stat.S_ISLNK(info.external_attr >> 16):
        raise UnsafeArchiveError(f"archive member {info.filename!r} is a symbolic link")


def safe_extract(archive: str | Path, target: str | Path, max_bytes: int = MAX_EXTRACTED_BYTES) -> None:
    """Extract a .tar(.gz) or .zip, refusing absolute paths, `..`, links that point outside `target`, and
    archives whose members add up to more than `max_bytes`; a damaged archive is a BadInput naming it."""
    archive, target = Path(archive), Path(target)
    target.mkdir(parents=True, exist_ok=True)
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as bundle:
                infos = bundle.infolist()
                for info in infos:
                    _check_zip_member(info)
                _check_total(archive, sum(info.file_size for info in infos), max_bytes)
                bundle.extractall(target)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as bundle:
                members = bundle.getmembers()
                for member in members:  # check all before writing anything
                    if member.name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", member.name):
                        raise UnsafeArchiveError(f"archive member {member.name!r} has an absolute path")
                    try:
                        tarfile.data_filter(member, str(target))
                    except tarfile.FilterError as error:
                        raise UnsafeArchiveError(f"archive member {member.name!r} refused: {error}") from error
                _check_total(archive, sum(member.size for member in members), max_bytes)
                bundle.extractall(target, members=members, filter="data")
        else:
            raise BadInput(f"{archive} is neither a tar nor a zip archive")
    except DAMAGED_ARCHIVE as error:
        raise BadInput(f"{archive} is a damaged archive ({type(error).__name__}: {error})") from error


def _check_total(archive: Path, total: int, max_bytes: int) -> None:
    if total > max_bytes:
        raise UnsafeArchiveError(f"{archive} would extract to {total:,} bytes, over the limit of {max_bytes:,}")


def _copy_images(source: Path, out_dir: Path) -> dict:
    """Copy every image under `source` into `out_dir` (flat); count what was skipped."""
    copied = skipped = 0
    seen: dict[str, Path] = {}
    files = sorted(path for path in source.rglob("*") if path.is_file() or path.is_symlink())
    for path in tqdm(files, desc="copy images", unit="file", mininterval=1, disable=not files):
        if not path.is_file() or not is_image_name(path.name) or path.name.startswith("._"):
            skipped += 1
            continue
        if path.name in seen:
            raise BadInput(f"two images named {path.name!r}: {seen[path.name]} and {path}")
        seen[path.name] = path
        shutil.copyfile(path, out_dir / path.name)
        copied += 1
    if copied == 0:
        raise NotFound(f"no image files (.jpg, .jpeg, .png) found in {source}")
    return {"images": copied, "skipped_non_images": skipped}


def fetch_dataset(out_dir: str | Path, url: str = "", sha256: str = "", source: str | None = None) -> dict:
    """Fill `out_dir` with the dataset's images; the source is `source` (default: $ARGML_UTKFACE), else `url`."""
    source = os.environ.get(ENV_DATASET) if source is None else source
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as staging, tempfile.TemporaryDirectory(prefix="argml-download-") as scratch:
        if source:
            origin = Path(source).expanduser()
            if origin.is_dir():
                report = _copy_images(origin, staging)
            elif origin.is_file() and origin.name.lower().endswith(ARCHIVE_SUFFIXES):
                safe_extract(origin, scratch)
                report = _copy_images(Path(scratch), staging)
            else:
                raise NotFound(f"{ENV_DATASET}={source!r} is neither a folder nor a "
                               f"{'/'.join(ARCHIVE_SUFFIXES)} archive")
            report["source"] = f"{ENV_DATASET}"
        elif url:
            if not sha256:
                raise BadInput("download.url is set but download.sha256 is empty: give the archive's sha256")
            archive = download_file(url, Path(scratch) / "dataset-archive", sha256)
            safe_extract(archive, Path(scratch) / "extracted")
            report = _copy_images(Path(scratch) / "extracted", staging)
            report["source"] = "download.url"
        else:
            raise NotFound(
                "no dataset source: set ARGML_UTKFACE to a UTKFace folder, .tar.gz or .zip "
                "(e.g. export ARGML_UTKFACE=../shared/data/utkface/UTKFace), or set download.url and "
                "download.sha256 in params.yaml to an archive you may use (UTKFace: non-commercial research only)")
    return report
