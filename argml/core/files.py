"""Small file helpers: content hashes and writes that never leave half-written outputs behind."""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
from pathlib import Path

from argml.core.errors import BadInput

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
ENV_CACHE = "ARGML_CACHE"


def cache_dir(*parts: str) -> Path:
    """argml's cache folder ($ARGML_CACHE, default ~/.cache/argml), or a folder inside it; made if missing."""
    path = Path(os.environ.get(ENV_CACHE) or Path.home() / ".cache" / "argml").expanduser().joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_SUFFIXES)


def file_digest(path: str | Path, algorithm: str = "md5", chunk_size: int = 1 << 20) -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


class Terminated(SystemExit):
    """Raised in a stage process on SIGTERM, so that `with` blocks (staging folders, MLflow runs) clean up."""


def _terminate(signum, frame):
    raise Terminated(128 + signum)


def run_as_stage() -> None:
    """Call first in a DVC stage process: it then stops when its parent (dvc) dies, and SIGTERM (from the
    parent's death or a user) unwinds it like Ctrl-C, removing its staging folders and closing its runs."""
    if sys.platform.startswith("linux"):
        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() == 1:  # the parent died before prctl took effect
            _terminate(signal.SIGTERM, None)
    signal.signal(signal.SIGTERM, _terminate)


@contextlib.contextmanager
def termination_deferred():
    """Hold a stage's SIGTERM off for the block and raise it right after: a write to the tracking store that
    SIGTERM stops half-way can leave SQLite's lock held, and the run could then not be marked KILLED."""
    in_stage = signal.getsignal(signal.SIGTERM) is _terminate
    if not in_stage or threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []
    signal.signal(signal.SIGTERM, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, _terminate)
    if received:
        _terminate(received[0], None)


def remove_stale_staging(target: str | Path) -> list[Path]:
    """Remove staging folders and files of `target` left by a killed process (`.<name>.<8 random chars>`)."""
    target = Path(target)
    if not target.parent.is_dir():
        return []
    pattern = re.compile(rf"\.{re.escape(target.name)}\.[a-z0-9_]{{8}}")
    stale = [path for path in target.parent.iterdir() if pattern.fullmatch(path.name)]
    for path in stale:
        print(f"removing stale staging {'folder' if path.is_dir() else 'file'} {path} (left by a killed run)",
              file=sys.stderr)
        shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink(missing_ok=True)
    return stale


@contextlib.contextmanager
def atomic_dir(target: str | Path):
    """Yield a temporary folder beside `target`; it replaces `target` only if the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(target)
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
    remove_stale_staging(target)
    handle, staging = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    os.close(handle)
    try:
        yield Path(staging)
    except BaseException:
        Path(staging).unlink(missing_ok=True)
        raise
    os.chmod(staging, 0o644)  # mkstemp makes it private
    os.replace(staging, target)


def read_stage_json(path: str | Path, stage: str) -> dict:
    """A JSON file another stage writes, or FileNotFoundError saying which stage to run."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run `dvc repro {stage}` first")
    return json.loads(path.read_text())


def write_json(path: str | Path, data) -> None:
    with atomic_path(path) as staging:
        staging.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")


def check_writable(path: str | Path | None, suffixes: tuple[str, ...], option: str) -> None:
    """Fail before any work when an output cannot be written, instead of after it (or silently)."""
    if not path:
        return
    target = Path(path)
    if target.suffix.lower() not in suffixes:
        raise BadInput(f"{option} must end in {' or '.join(suffixes)}, got {target.name!r}")
    if target.is_dir():
        raise BadInput(f"{option} {path} is a folder; give a file name")
    existing = target.parent.absolute()
    while not existing.exists() and existing != existing.parent:  # missing folders are made when writing
        existing = existing.parent
    if not existing.is_dir():
        raise BadInput(f"{option} {path}: cannot write there ({existing} is a file, not a folder)")
    if not os.access(existing, os.W_OK):
        raise BadInput(f"{option} {path}: cannot write there ({existing} is not writable)")
