"""An audit as an MLflow run in the experiment `argml-audits`: its settings, the model version it used, its
counts and shares as metrics, and report.json/.md/.png as artifacts.

The store is argml's (argml.tracking.runs.configure: $MLFLOW_TRACKING_URI, else ./mlflow.db). A rerun of the
same audit folder reopens the run it recorded in DIR/run.json instead of adding another. (argml.tracking
has no helper for a second experiment; this module keeps that here rather than editing it.)
"""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlparse

import mlflow

from argml.core.files import write_json
from argml.tracking.runs import EXPERIMENT_TAGS, configure

EXPERIMENT = "argml-audits"


def _artifact_location(uri: str) -> str | None:
    """Beside a local SQLite store (its folder's mlruns/, as argml's own experiment); a server decides itself."""
    parsed = urlparse(uri)
    if parsed.scheme == "sqlite":
        return (Path(parsed.path).parent / "mlruns").resolve().as_uri()
    return None


def experiment_id() -> str:
    uri = configure()
    experiment = mlflow.get_experiment_by_name(EXPERIMENT)
    if experiment is not None:
        return experiment.experiment_id
    return mlflow.create_experiment(EXPERIMENT, artifact_location=_artifact_location(uri), tags=EXPERIMENT_TAGS)


def metrics(report: dict) -> dict[str, float]:
    values = {f"photos.{key}": float(value) for key, value in report["photos"].items() if not isinstance(value, dict)}
    for task, shares in report["shares"].items():
        for kind in ("raw", "corrected"):
            for name, share in shares[kind].items():
                key = f"{kind}.{task}.{name}".replace("+", "plus")
                values[key] = share["share"]
                if kind == "corrected":
                    values[f"{key}.low"], values[f"{key}.high"] = share["low"], share["high"]
    return {key: value for key, value in values.items() if value == value}  # NaN (no faces) is not logged


def log(report: dict, paths: list[Path], params: dict, run_file: Path) -> str:
    """Log the audit (see the module docstring); -> the run id."""
    experiment = experiment_id()
    client = mlflow.MlflowClient()
    run_id = json.loads(run_file.read_text())["run_id"] if run_file.exists() else None
    if run_id:
        try:
            client.get_run(run_id)
        except mlflow.exceptions.MlflowException:
            run_id = None
    model = report["model"]
    if run_id is None:
        tags = {"model_uri": str(model.get("uri")), "model_version": str(model.get("version") or "none"),
                "model_name": str(model.get("name") or ""), "backend": str(model.get("backend"))}
        run_id = client.create_run(experiment, tags=tags, run_name=f"audit-{run_file.parent.name}").info.run_id
        client.log_batch(run_id, params=[mlflow.entities.Param(key, str(value)) for key, value in params.items()])
        write_json(run_file, {"run_id": run_id})
    client.log_batch(run_id, metrics=[mlflow.entities.Metric(key, value, 0, 0) for key, value in metrics(report).items()])
    for path in paths:
        client.log_artifact(run_id, str(path))
    client.set_terminated(run_id, "FINISHED")
    return run_id
