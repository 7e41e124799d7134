"""Small file helpers: content hashes and writes that never leave half-written outputs behind."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_SUFFIXES)


def file_digest(path: str | Path, algorithm: str = "md5", chunk_size: int = 1 << 20) -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


@contextlib.contextmanager
def atomic_dir(target: str | Path):
    """Yield a temporary folder beside `target`; it replaces `target` only if the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    staging.chmod(0o755)  # mkdtemp makes it private
    if target.exists():
        shutil.rmtree(target)
    os.replace(staging, target)


@contextlib.contextmanager
def atomic_path(target: str | Path):
    """Yield a temporary file path beside `target`; it becomes `target` only if the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, staging = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    os.close(handle)
    try:
        yield Path(staging)
    except BaseException:
        Path(staging).unlink(missing_ok=True)
        raise
    os.chmod(staging, 0o644)  # mkstemp makes it private
    os.replace(staging, target)


def write_json(path: str | Path, data) -> None:
    with atomic_path(path) as staging:
        staging.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
