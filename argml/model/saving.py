"""Saving a Keras model as a `.keras` file whose bytes depend on the model only.

Keras writes the save time twice into a `.keras` zip: `date_saved` in metadata.json and the weights entry's
zip timestamp. A DVC output must be a function of its inputs, so this rewrites the zip with every entry dated
1980-01-01 (the zip format's zero) and without `date_saved`; the file loads as any `.keras` file does.
"""

from __future__ import annotations

import json
import tempfile
import zipfile
from pathlib import Path

from argml.core.files import atomic_path

ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
METADATA = "metadata.json"


def stable_zip(source: Path, target: Path) -> None:
    """Copy the zip `source` to `target` with fixed entry dates, and metadata.json without `date_saved`."""
    with zipfile.ZipFile(source) as original, zipfile.ZipFile(target, "w") as copy:
        for entry in original.infolist():
            data = original.read(entry)
            if entry.filename == METADATA:
                metadata = json.loads(data)
                metadata.pop("date_saved", None)
                data = json.dumps(metadata).encode()
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
