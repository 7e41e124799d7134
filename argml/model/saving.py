"""Saving a Keras model as a `.keras` file whose bytes depend on the model only.

Keras writes the save time twice into a `.keras` zip: `date_saved` in metadata.json and the weights entry's
zip timestamp; and config.json links objects that layers share (a dtype policy) by `shared_object_id`, the
object's Python id(), a memory address. A DVC output must be a function of its inputs, so this rewrites the
zip with every entry dated 1980-01-01 (the zip format's zero), without `date_saved`, and with the shared
objects numbered in their order of appearance; the file loads as any `.keras` file does.
"""

from __future__ import annotations

import json
import re
import tempfile
import zipfile
from pathlib import Path

from argml.core.files import atomic_path

ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
METADATA = "metadata.json"
CONFIG = "config.json"
SHARED_ID = re.compile(rb'"shared_object_id": (\d+)')


def numbered_shared_objects(config: bytes) -> bytes:
    """config.json with each distinct shared_object_id replaced by its rank of first appearance (1, 2, ...)."""
    ranks: dict[bytes, int] = {}
    return SHARED_ID.sub(lambda match: b'"shared_object_id": %d' % ranks.setdefault(match[1], len(ranks) + 1),
                         config)


def stable_zip(source: Path, target: Path) -> None:
    """Copy the zip `source` to `target` with fixed entry dates, metadata.json without `date_saved` and
    config.json's shared objects numbered."""
    with zipfile.ZipFile(source) as original, zipfile.ZipFile(target, "w") as copy:
        for entry in original.infolist():
            data = original.read(entry)
            if entry.filename == METADATA:
                metadata = json.loads(data)
                metadata.pop("date_saved", None)
                data = json.dumps(metadata).encode()
            elif entry.filename == CONFIG:
                data = numbered_shared_objects(data)
            stable = zipfile.ZipInfo(entry.filename, date_time=ZIP_EPOCH)
            stable.compress_type, stable.external_attr = entry.compress_type, entry.external_attr
            copy.writestr(stable, data)


def save_model(model, path: str | Path) -> Path:
    """`model.save(path)`, atomically, with the same bytes on every run for the same weights."""
    path = Path(path)
    with tempfile.TemporaryDirectory() as scratch, atomic_path(path) as staging:
        plain = Path(scratch) / "model.keras"
        model.save(plain)
        stable_zip(plain, staging)
    return path
