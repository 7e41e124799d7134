"""MLflow: runs, per-epoch metrics, test metrics, artifacts, the registered pyfunc model and its aliases.

The only module that imports mlflow. Tracking URI: $MLFLOW_TRACKING_URI, else `sqlite:///mlflow.db` in the
current folder (the repository root when run by DVC), with artifacts in `mlruns/` beside it.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import time
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import keras  # noqa: E402
import mlflow  # noqa: E402
import numpy as np  # noqa: E402
from mlflow.models import infer_signature  # noqa: E402

EXPERIMENT = "argml"


def configure() -> str:
    uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path('mlflow.db').resolve()}"
    mlflow.set_tracking_uri(uri)
    if mlflow.get_experiment_by_name(EXPERIMENT) is None:
        mlflow.create_experiment(EXPERIMENT, artifact_location=Path("mlruns").resolve().as_uri())
    mlflow.set_experiment(EXPERIMENT)
    return uri


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def start_run(mode: str, params: dict[str, object]) -> str:
    """A new run named after the age mode, tagged with the git commit; params = flattened params.yaml."""
    configure()
    with mlflow.start_run(run_name=mode, tags={"age_mode": mode, "git_commit": git_commit(),
                                               "mlflow.source.git.commit": git_commit()}) as run:
        mlflow.log_params({key: str(value) for key, value in params.items()})
        return run.info.run_id


class EpochLogger(keras.callbacks.Callback):
    """Logs every epoch's metrics to a run, numbering epochs across both training phases."""

    def __init__(self, run_id: str):
        super().__init__()
        self.run_id, self.step = run_id, 0

    def on_epoch_end(self, epoch, logs=None):
        self.step += 1
        metrics = {key: float(value) for key, value in (logs or {}).items() if np.isscalar(value)}
        mlflow.MlflowClient().log_batch(self.run_id, metrics=[
            mlflow.entities.Metric(key, value, int(time.time() * 1000), self.step)
            for key, value in metrics.items()])


def log_artifacts(run_id: str, paths: list[str | Path], folder: str | None = None) -> None:
    client = mlflow.MlflowClient()
    for path in map(Path, paths):
        if path.is_dir():
            client.log_artifacts(run_id, str(path), f"{folder}/{path.name}" if folder else path.name)
        elif path.exists():
            client.log_artifact(run_id, str(path), folder)


def log_test_metrics(run_id: str, metrics: dict[str, float]) -> None:
    client = mlflow.MlflowClient()
    for key, value in metrics.items():
        client.log_metric(run_id, f"test.{key}", value)


class ArgmlPyfunc(mlflow.pyfunc.PythonModel):
    """Aligned RGB faces [B, 160, 160, 3] (0-255) -> per task: label, probability, probabilities."""

    def load_context(self, context):
        from argml.classifier import Classifier

        description = json.loads(Path(context.artifacts["description"]).read_text())
        self.classifier = Classifier(context.artifacts["keras_model"], description)

    def predict(self, context, model_input, params=None):
        return self.classifier.predict(np.asarray(model_input))


def _requirements() -> list[str]:
    names = ("tensorflow-cpu", "keras", "numpy", "pandas", "mlflow")
    return [f"{name}=={importlib.metadata.version(name)}" for name in names]


def log_model(run_id: str, model_dir: str | Path, example_faces: np.ndarray, model_name: str, alias: str) -> int:
    """Log the model as a pyfunc with signature and input example, register it, set `alias`; -> version."""
    from argml.classifier import Classifier

    model_dir = Path(model_dir)
    example = example_faces.astype(np.uint8)
    output = Classifier(model_dir / "model.keras").predict(example)
    with mlflow.start_run(run_id=run_id):
        info = mlflow.pyfunc.log_model(
            name="model", python_model=ArgmlPyfunc(),
            artifacts={"keras_model": str(model_dir / "model.keras"), "description": str(model_dir / "model.json")},
            signature=infer_signature(example, output), input_example=example,
            pip_requirements=_requirements(), registered_model_name=model_name)
    version = int(info.registered_model_version)
    mlflow.MlflowClient().set_registered_model_alias(model_name, alias, version)
    return version


def load_classifier(uri: str):
    """The Classifier inside a registered pyfunc model (e.g. models:/argml@champion)."""
    configure()
    try:
        model = mlflow.pyfunc.load_model(uri)
    except mlflow.exceptions.MlflowException as error:
        raise FileNotFoundError(
            f"no model at {uri} in {mlflow.get_tracking_uri()}: train one with `dvc repro` (it registers "
            f"`argml` with aliases binned, exact and champion), or pass --model path/to/model.keras "
            f"({error.message.splitlines()[0]})") from error
    return model.unwrap_python_model().classifier


def set_champion(model_name: str, mode: str) -> int:
    """Point alias `champion` at the version that carries alias `mode`."""
    configure()
    client = mlflow.MlflowClient()
    version = int(client.get_model_version_by_alias(model_name, mode).version)
    client.set_registered_model_alias(model_name, "champion", version)
    return version
