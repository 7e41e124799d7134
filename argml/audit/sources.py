"""What an audit reads: the photos named by folders, list files, Parquet/CSV manifests, image paths or URIs.

- a folder: every .jpg/.jpeg/.png under it (recursively), in sorted order;
- a list file (.txt, .lst): one path or URI per line (blank lines and lines starting with # are skipped);
- a manifest (.parquet, .csv): its `path`, `uri` or `file` column;
- an image path or a URI (file://, or any scheme fsspec knows, e.g. s3:// with s3fs installed).

Relative paths in a list or manifest are relative to that file's folder; local paths become absolute, so every
worker of a cluster reads the same file. Entries keep their order; one named twice is audited once (counted as
a duplicate). A PATH given on the command line must exist; a missing file *inside* a list or manifest is an
input problem of the audit (counted and listed with the unreadable files), not an error.

`read(entry, limits)` decodes one entry through argml.core.images, with the `decode` limits of params.yaml.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import pandas as pd

from argml.core import images
from argml.core.files import IMAGE_SUFFIXES, is_image_name

LIST_SUFFIXES = (".txt", ".lst")
MANIFEST_SUFFIXES = (".parquet", ".csv")
MANIFEST_COLUMNS = ("path", "uri", "file")  # the first of these a manifest has names its photos


@dataclass(frozen=True)
class Inputs:
    entries: list[str]  # absolute local paths or URIs, in order, each once
    duplicates: int  # entries named more than once (audited once)


def is_uri(text: str) -> bool:
    return "://" in text


def _local(text: str, base: Path) -> str:
    """An absolute local path for a path (relative to `base`) or a file:// URI; other URIs as they are."""
    if text.startswith("file://"):
        return str(Path(unquote(urlparse(text).path)))
    if is_uri(text):
        return text
    path = Path(text).expanduser()
    return str(path if path.is_absolute() else (base / path).absolute())


def _open_text(source: str):
    import fsspec

    return fsspec.open(source, "rb").open()


def _manifest_entries(source: str, base: Path) -> list[str]:
    with _open_text(source) as handle:
        table = pd.read_parquet(handle) if source.lower().endswith(".parquet") else pd.read_csv(handle)
    column = next((name for name in MANIFEST_COLUMNS if name in table.columns), None)
    if column is None:
        raise ValueError(f"manifest {source} has none of the columns {', '.join(MANIFEST_COLUMNS)} "
                         f"(it has {', '.join(map(str, table.columns))})")
    return [_local(str(value), base) for value in table[column].dropna()]


def _list_entries(source: str, base: Path) -> list[str]:
    with _open_text(source) as handle:
        lines = handle.read().decode("utf-8").splitlines()
    return [_local(line.strip(), base) for line in lines if line.strip() and not line.lstrip().startswith("#")]


def _expand(argument: str) -> list[str]:
    lower = argument.lower()
    if is_uri(argument) and not argument.startswith("file://"):
        base = Path.cwd()
        if lower.endswith(MANIFEST_SUFFIXES):
            return _manifest_entries(argument, base)
        return _list_entries(argument, base) if lower.endswith(LIST_SUFFIXES) else [argument]
    path = Path(_local(argument, Path.cwd()))
    if path.is_dir():
        return [str(found) for found in sorted(path.rglob("*")) if found.suffix.lower() in IMAGE_SUFFIXES]
    if not path.exists():
        raise FileNotFoundError(f"{argument} does not exist (give folders, list files, manifests or images)")
    if lower.endswith(MANIFEST_SUFFIXES):
        return _manifest_entries(str(path), path.parent)
    if lower.endswith(LIST_SUFFIXES):
        return _list_entries(str(path), path.parent)
    if not is_image_name(path.name):
        raise ValueError(f"{argument}: not a folder, a list ({', '.join(LIST_SUFFIXES)}), a manifest "
                         f"({', '.join(MANIFEST_SUFFIXES)}) or an image ({', '.join(IMAGE_SUFFIXES)})")
    return [str(path)]


def collect(arguments: list[str]) -> Inputs:
    """Every entry the command line's PATHs name, in order, each once."""
    seen: dict[str, None] = {}
    named = 0
    for argument in arguments:
        for entry in _expand(str(argument)):
            named += 1
            seen.setdefault(entry, None)
    return Inputs(list(seen), named - len(seen))


def read_bytes(entry: str, limits: images.Limits) -> bytes:
    """The encoded bytes of a URI entry, its size checked before reading; ImageError when it cannot be read."""
    import fsspec

    try:
        with fsspec.open(entry, "rb") as handle:
            size = getattr(handle, "size", None)
            if size is not None and size > limits.max_bytes:
                raise images.ImageError(f"{entry}: {size:,} bytes is over the limit of {limits.max_bytes:,} bytes "
                                        "(decode.max_bytes)")
            data = handle.read(limits.max_bytes + 1)
    except OSError as error:
        raise images.ImageError(f"{entry}: cannot be read ({error.strerror or error})") from None
    if len(data) > limits.max_bytes:
        raise images.ImageError(f"{entry}: over the limit of {limits.max_bytes:,} bytes (decode.max_bytes)")
    return data


def read(entry: str, limits: images.Limits) -> np.ndarray:
    """The BGR pixels of one entry (a local path or a URI), through argml.core.images' limits; ImageError
    when it is missing, unreadable, truncated or too large."""
    if not is_uri(entry):
        return images.read(entry, limits)
    return images.decode(read_bytes(entry, limits), entry, limits)
