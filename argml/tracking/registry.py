"""The MLflow model registry: which version an alias names, provenance tags, and the champion alias.

argml registers two models per age mode: `argml` (aligned faces in, argml.serving.pyfunc) and `argml-photos`
(encoded photos in, argml.serving.photos); their versions carry the git commit, the age mode and the sha256
of the files that make them, so a local `dvc pull` and a registered version can be told apart.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import mlflow

from argml.core.errors import NotFound
from argml.core.files import atomic_path, cache_dir, file_digest
from argml.tracking.runs import EXPERIMENT, configure

MODEL_TAG = "model_sha256"  # on a training run and on every version registered from it: the model_digest
DIGEST_CACHE = "sha256.json"  # in argml's cache folder: {path: {"stat": [...], "sha256": ...}}


def file_sha256(path: str | Path) -> str:
    """A file's sha256, computed again only when its size, mtime, ctime or inode changed since the last
    time ($ARGML_CACHE/sha256.json): loading a registered model compares a 90 MB model.keras on every load.
    A rewrite changes ctime, which no user can set back."""
    path = Path(path).resolve()
    info = path.stat()
    stamp = [info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino]
    cache_file = cache_dir() / DIGEST_CACHE
    try:
        cache = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        cache = {}
    entry = cache.get(str(path))
    if entry is not None and entry.get("stat") == stamp:
        return entry["sha256"]
    digest = file_digest(path, "sha256")
    cache = {name: value for name, value in cache.items() if Path(name).exists()}
    cache[str(path)] = {"stat": stamp, "sha256": digest}
    with atomic_path(cache_file) as staging:
        staging.write_text(json.dumps(cache, indent=1) + "\n")
    return digest


def model_digest(model_dir: str | Path) -> str:
    """sha256 over the files that make a trained model: model.keras and model.json."""
    model_dir = Path(model_dir)
    parts = [file_sha256(model_dir / name) for name in ("model.keras", "model.json")]
    return hashlib.sha256(" ".join(parts).encode()).hexdigest()


def mark_run(run_id: str, model_dir: str | Path) -> None:
    """Tag the training run with the digest of the model it made, so later stages find it (run_of)."""
    mlflow.MlflowClient().set_tag(run_id, MODEL_TAG, model_digest(model_dir))


def run_of(model_dir: str | Path) -> str:
    """The id of the MLflow run that made the model in `model_dir` (the newest, if several made these bytes).
    The model's folder holds no run id of its own: it is a DVC output, and must not differ between runs."""
    digest = model_digest(model_dir)
    experiment = mlflow.get_experiment_by_name(EXPERIMENT)
    found = [] if experiment is None else mlflow.MlflowClient().search_runs(
        [experiment.experiment_id], f"tags.{MODEL_TAG} = '{digest}'", order_by=["attributes.start_time DESC"],
        max_results=1)
    if not found:
        raise FileNotFoundError(f"no run in the MLflow store {mlflow.get_tracking_uri()} made the model in "
                                f"{model_dir}: run `dvc repro` (train) against this store")
    return found[0].info.run_id


def registered_version(uri: str):
    """The model version a models:/NAME@ALIAS or models:/NAME/VERSION URI names; None for other URIs;
    NotFound when the registry has no such version."""
    if not uri.startswith("models:/"):
        return None
    name, _, selector = uri[len("models:/"):].partition("@")
    client = mlflow.MlflowClient()
    try:
        if selector:
            return client.get_model_version_by_alias(name, selector)
        name, _, number = name.partition("/")
        return client.get_model_version(name, number) if number.isdigit() else None
    except mlflow.exceptions.MlflowException as error:
        raise NotFound(f"no model at {uri} in {mlflow.get_tracking_uri()}: train one with `dvc repro`, or pass "
                       f"--model path/to/model.keras ({error.message.splitlines()[0]})") from None


def local_model_mismatch(uri: str, models_dir: str | Path = "data/models") -> str | None:
    """A warning when the pipeline's local model of the same age mode (e.g. from `dvc pull`) is not the
    registered version `uri` names; None when they match or there is nothing to compare."""
    try:
        version = registered_version(uri)
    except NotFound:
        return None
    if version is None or "model_sha256" not in version.tags:
        return None
    local = Path(models_dir) / version.tags.get("age_mode", "")
    if not (local / "model.keras").exists() or not (local / "model.json").exists():
        return None
    if model_digest(local) == version.tags["model_sha256"]:
        return None
    return (f"{local} is not the model {uri} names (version {version.version}, git commit "
            f"{version.tags.get('git_commit', '?')[:12]}): the registry and this checkout's DVC outputs differ; "
            f"`dvc pull` at that commit, or pass --model {local}/model.keras to use the local one")


def set_champion(model_name: str, mode: str) -> int:
    """Point alias `champion` at the version that carries alias `mode`."""
    configure(create=True)
    client = mlflow.MlflowClient()
    try:
        version = int(client.get_model_version_by_alias(model_name, mode).version)
    except mlflow.exceptions.MlflowException as error:
        raise NotFound(f"no version of {model_name} has the alias {mode} in {mlflow.get_tracking_uri()}: run "
                       f"`dvc repro` (evaluate@{mode} and export@{mode} register it) first "
                       f"({error.message.splitlines()[0]})") from None
    client.set_registered_model_alias(model_name, "champion", version)
    return version
