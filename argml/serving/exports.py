"""A model version's LiteRT exports in the MLflow registry: logged to its run, tagged with their sha256 and
whether int8 is within tolerance of Keras, and loaded back (checked against that sha256) for `--backend litert`.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import mlflow

from argml.core.card import ModelCard
from argml.core.errors import BadInput
from argml.core.files import cache_dir, file_digest
from argml.serving.convert import KINDS, export_name
from argml.serving.litert import LiteClassifier
from argml.tracking import registry
from argml.tracking.runs import configure

ARTIFACT_FOLDER = "litert"


def log_exports(run_id: str, export_dir: str | Path, report_path: str | Path, model_name: str, mode: str) -> int:
    """Log the exports, their model.json and the report to the mode's run (folder `litert`), and tag the
    version registered from that run (alias `mode`) with each export's sha256 and whether it is within
    tolerance. -> the version."""
    export_dir = Path(export_dir)
    client = mlflow.MlflowClient()
    version = client.get_model_version_by_alias(model_name, mode)
    if version.run_id != run_id:
        raise BadInput(f"{model_name}@{mode} is version {version.version} from run {version.run_id}, not this "
                       f"model's run {run_id}: run `dvc repro evaluate@{mode}` first")
    for path in (*(export_dir / export_name(kind) for kind in KINDS), export_dir / "model.json", report_path):
        client.log_artifact(run_id, str(path), ARTIFACT_FOLDER)
    report = json.loads(Path(report_path).read_text())
    tags = {f"litert_{kind}_sha256": file_digest(export_dir / export_name(kind), "sha256") for kind in KINDS}
    tags["litert_within_tolerance"] = str(report["int8"]["within_tolerance"]).lower()
    for key, value in tags.items():
        client.set_model_version_tag(model_name, version.version, key, value)
    return int(version.version)


def registered_export(uri: str, kind: str = "int8", threads: int = 0) -> LiteClassifier:
    """The `kind` export of the version a models:/ URI names, from its run's artifacts (downloaded once into
    $ARGML_CACHE/litert, checked against the version's sha256 tag on every load)."""
    configure()
    version = registry.registered_version(uri)
    if version is None:
        raise BadInput(f"{uri}: the LiteRT backend needs a models:/NAME@ALIAS or models:/NAME/VERSION URI, "
                       "or the path of a .tflite export")
    sha256 = version.tags.get(f"litert_{kind}_sha256")
    if sha256 is None:
        raise FileNotFoundError(f"{uri} (version {version.version}) has no LiteRT export: run `dvc repro "
                                f"export@{version.tags.get('age_mode', 'MODE')}`, or use --backend keras")
    folder = cache_dir("litert", version.run_id)
    path = folder / ARTIFACT_FOLDER / export_name(kind)
    if not path.exists() or registry.file_sha256(path) != sha256:
        folder.mkdir(parents=True, exist_ok=True)
        mlflow.artifacts.download_artifacts(run_id=version.run_id, artifact_path=ARTIFACT_FOLDER, dst_path=str(folder))
    mismatch = registry.local_model_mismatch(uri)
    if mismatch:
        warnings.warn(mismatch, stacklevel=2)
    return LiteClassifier(path, ModelCard.load(path), threads, sha256=sha256)


def registered_backend(uri: str) -> str:
    """`litert` when the version a models:/ URI names has an int8 export within tolerance, else `keras`."""
    configure()
    try:
        version = registry.registered_version(uri)
    except Exception:  # an unknown alias: the Keras path reports it clearly
        return "keras"
    return "litert" if version is not None and version.tags.get("litert_within_tolerance") == "true" else "keras"
