"""MLflow: runs, per-epoch metrics, test metrics, artifacts, the registered pyfunc model and its aliases.

The only module that imports mlflow. Tracking URI: $MLFLOW_TRACKING_URI, else `sqlite:///mlflow.db` in the
current folder (the repository root when run by DVC), with artifacts in `mlruns/` beside it.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import os
import subprocess
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import keras  # noqa: E402
import mlflow  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from mlflow.models import ModelSignature, infer_signature  # noqa: E402

from argml.files import Terminated, file_digest  # noqa: E402

EXPERIMENT = "argml"
# MLflow 3's UI opens an experiment of this kind on its training runs, not on the GenAI (traces) overview.
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}


def configure(create: bool = False) -> str:
    """Point MLflow at $MLFLOW_TRACKING_URI, else ./mlflow.db. Only the pipeline (`create`) makes a new
    store and the experiment; readers (live, predict) get FileNotFoundError instead of an empty mlflow.db."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        local = Path("mlflow.db").resolve()
        if not create and not local.exists():
            raise FileNotFoundError(f"no MLflow store: {local} does not exist and MLFLOW_TRACKING_URI is unset; "
                                    "run from the repository after `dvc repro`, set MLFLOW_TRACKING_URI, or pass "
                                    "--model path/to/model.keras")
        uri = f"sqlite:///{local}"
    mlflow.set_tracking_uri(uri)
    if not create:
        return uri
    experiment = mlflow.get_experiment_by_name(EXPERIMENT)
    if experiment is None:
        # A server keeps (or proxies) artifacts where it was told to; the local store keeps them in ./mlruns.
        location = None if uri.startswith(("http://", "https://")) else Path("mlruns").resolve().as_uri()
        mlflow.create_experiment(EXPERIMENT, artifact_location=location, tags=EXPERIMENT_TAGS)
    elif any(experiment.tags.get(key) != value for key, value in EXPERIMENT_TAGS.items()):
        for key, value in EXPERIMENT_TAGS.items():
            mlflow.MlflowClient().set_experiment_tag(experiment.experiment_id, key, value)
    mlflow.set_experiment(EXPERIMENT)
    return uri


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


@contextlib.contextmanager
def training_run(mode: str, params: dict[str, object], resume_file: str | Path):
    """An MLflow run that is open while its block runs: FINISHED if the block ends normally, KILLED on
    SIGTERM/Ctrl-C, FAILED on an error. A run left open by a killed training (its id in `resume_file`) is
    reopened instead of starting a new one, so a resumed training stays one run. Yields the run id."""
    configure(create=True)
    resume_file = Path(resume_file)
    run_id = json.loads(resume_file.read_text())["run_id"] if resume_file.exists() else None
    if run_id and _run_status(run_id) not in ("RUNNING", "KILLED", "FAILED"):
        run_id = None
    commit = git_commit()
    if run_id:
        run = mlflow.start_run(run_id=run_id)
        print(f"MLflow: resuming run {run_id} ({mode})")
    else:
        tags = {"age_mode": mode, "git_commit": commit, "mlflow.source.git.commit": commit}
        experiment = os.environ.get("DVC_EXP_NAME")  # set by `dvc exp run`: the same name in `dvc exp show`
        if experiment:
            tags["dvc_exp_name"] = experiment
        run = mlflow.start_run(run_name=f"{experiment}-{mode}" if experiment else mode, tags=tags)
        mlflow.log_params({key: str(value) for key, value in params.items()})
        resume_file.parent.mkdir(parents=True, exist_ok=True)
        resume_file.write_text(json.dumps({"run_id": run.info.run_id}) + "\n")
    try:
        yield run.info.run_id
    except (KeyboardInterrupt, Terminated):
        mlflow.end_run("KILLED")
        raise
    except BaseException:
        mlflow.end_run("FAILED")
        raise
    mlflow.end_run("FINISHED")


def _run_status(run_id: str) -> str | None:
    try:
        return mlflow.MlflowClient().get_run(run_id).info.status
    except mlflow.exceptions.MlflowException:
        return None


def epoch_logger(run_id: str):
    """on_epoch(step, logs) for argml.train: logs an epoch's scalar metrics at `step`."""
    client = mlflow.MlflowClient()

    def log(step: int, logs: dict) -> None:
        now = int(time.time() * 1000)
        client.log_batch(run_id, metrics=[mlflow.entities.Metric(key, float(value), now, step)
                                          for key, value in logs.items() if np.isscalar(value)])

    return log


def log_missing_epochs(run_id: str, history: pd.DataFrame) -> int:
    """Logs the epochs of `history` (the CSV logs, which survive a kill) that the run lacks: a kill between
    the CSV row and the MLflow call would otherwise leave a hole in the curves. Returns how many were added."""
    client = mlflow.MlflowClient()
    metric_names = [name for name in history.columns if name not in ("epoch", "phase")]
    logged = {name: {m.step for m in client.get_metric_history(run_id, name)} for name in metric_names}
    now = int(time.time() * 1000)
    missing = [mlflow.entities.Metric(name, float(row[name]), now, int(row["epoch"]))
               for _, row in history.iterrows() for name in metric_names
               if int(row["epoch"]) not in logged[name] and pd.notna(row[name])]
    for start in range(0, len(missing), 1000):  # log_batch takes at most 1000 metrics
        client.log_batch(run_id, metrics=missing[start:start + 1000])
    return len(missing)


def log_artifacts(run_id: str, paths: list[str | Path], folder: str | None = None) -> None:
    client = mlflow.MlflowClient()
    for path in map(Path, paths):
        if path.is_dir():
            client.log_artifacts(run_id, str(path), f"{folder}/{path.name}" if folder else path.name)
        elif path.exists():
            client.log_artifact(run_id, str(path), folder)


def log_test_metrics(run_id: str, metrics: dict[str, float], prefix: str = "test") -> None:
    client = mlflow.MlflowClient()
    for key, value in metrics.items():
        client.log_metric(run_id, f"{prefix}.{key}", value)


class ArgmlPyfunc(mlflow.pyfunc.PythonModel):
    """Aligned RGB faces [B, 160, 160, 3] (0-255) -> per task: label, probability, probabilities."""

    def load_context(self, context):
        from argml.classifier import Classifier

        description = json.loads(Path(context.artifacts["description"]).read_text())
        self.classifier = Classifier(context.artifacts["keras_model"], description)

    def predict(self, context, model_input: np.ndarray, params=None) -> pd.DataFrame:
        # np.ndarray: a hint MLflow accepts without inferring a schema from it (checks: check_faces)
        from argml.classifier import check_faces

        try:
            faces = check_faces(model_input, self.classifier.input_size)
        except ValueError as error:  # a 400 from `mlflow models serve`, not a confident answer
            raise mlflow.exceptions.MlflowException.invalid_parameter_value(str(error)) from None
        return self.classifier.predict(faces)


def _requirements() -> list[str]:
    names = ("tensorflow-cpu", "keras", "numpy", "pandas", "mlflow")
    return [f"{name}=={importlib.metadata.version(name)}" for name in names]


def log_model(run_id: str, model_dir: str | Path, example_faces: np.ndarray, model_name: str, alias: str) -> int:
    """Log the model as a pyfunc with signature and input example, register it, set `alias`; -> version."""
    from argml.classifier import Classifier

    model_dir = Path(model_dir)
    example = example_faces.astype(np.uint8)
    output = Classifier(model_dir / "model.keras").predict(example)
    # No input schema: with one, MLflow casts JSON input to its dtype (0-1 floats to uint8 zeros) before
    # predict could refuse it; ArgmlPyfunc.predict checks shape and values itself (classifier.check_faces).
    signature = ModelSignature(inputs=None, outputs=infer_signature(example, output).outputs)
    with mlflow.start_run(run_id=run_id):
        info = mlflow.pyfunc.log_model(
            name="model", python_model=ArgmlPyfunc(),
            artifacts={"keras_model": str(model_dir / "model.keras"), "description": str(model_dir / "model.json")},
            signature=signature, input_example=example, pip_requirements=_requirements(),
            metadata={"input": "aligned RGB faces [N, 160, 160, 3], integers 0-255"},
            code_paths=[str(Path(__file__).resolve().parent)],  # loads where argml is not installed
            registered_model_name=model_name)
    version = int(info.registered_model_version)
    client = mlflow.MlflowClient()
    # Provenance: `dvc pull` brings data/models/<mode>; these tags let anyone check it is this version.
    for key, value in {"git_commit": git_commit(), "age_mode": alias, "model_sha256": model_digest(model_dir)}.items():
        client.set_model_version_tag(model_name, str(version), key, value)
    client.set_registered_model_alias(model_name, alias, version)
    return version


def model_digest(model_dir: str | Path) -> str:
    """sha256 over the files that make a trained model: model.keras and model.json."""
    model_dir = Path(model_dir)
    parts = [file_digest(model_dir / name, "sha256") for name in ("model.keras", "model.json")]
    return hashlib.sha256(" ".join(parts).encode()).hexdigest()


def _registered_version(uri: str):
    """The model version a models:/NAME@ALIAS or models:/NAME/VERSION URI names; None for other URIs."""
    if not uri.startswith("models:/"):
        return None
    name, _, selector = uri[len("models:/"):].partition("@")
    client = mlflow.MlflowClient()
    if selector:
        return client.get_model_version_by_alias(name, selector)
    name, _, number = name.partition("/")
    return client.get_model_version(name, number) if number.isdigit() else None


def local_model_mismatch(uri: str, models_dir: str | Path = "data/models") -> str | None:
    """A warning when the pipeline's local model of the same age mode (e.g. from `dvc pull`) is not the
    registered version `uri` names; None when they match or there is nothing to compare."""
    try:
        version = _registered_version(uri)
    except mlflow.exceptions.MlflowException:
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


def load_classifier(uri: str):
    """The Classifier inside a registered pyfunc model (e.g. models:/argml@champion)."""
    configure()
    # The Classifier holds the Keras model in memory, so the downloaded copy (about 90 MB) can go at once;
    # MLflow's own download folder would stay in the system's temp folder for good.
    with tempfile.TemporaryDirectory(prefix="argml-model-") as download:
        try:
            model = mlflow.pyfunc.load_model(uri, dst_path=download)
        except mlflow.exceptions.MlflowException as error:
            raise FileNotFoundError(
                f"no model at {uri} in {mlflow.get_tracking_uri()}: train one with `dvc repro` (it registers "
                f"`argml` with aliases binned, exact and champion), or pass --model path/to/model.keras "
                f"({error.message.splitlines()[0]})") from error
    mismatch = local_model_mismatch(uri)
    if mismatch:
        warnings.warn(mismatch, stacklevel=2)
    return model.unwrap_python_model().classifier


def set_champion(model_name: str, mode: str) -> int:
    """Point alias `champion` at the version that carries alias `mode`."""
    configure(create=True)
    client = mlflow.MlflowClient()
    version = int(client.get_model_version_by_alias(model_name, mode).version)
    client.set_registered_model_alias(model_name, "champion", version)
    return version
