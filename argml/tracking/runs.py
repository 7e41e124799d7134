"""MLflow runs: the store, one run per training, per-epoch and test metrics, artifacts.

Tracking URI: $MLFLOW_TRACKING_URI, else `sqlite:///mlflow.db` in the current folder (the repository root
when run by DVC), with artifacts in `mlruns/` beside it. DVC decides what reruns; MLflow records what ran.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import mlflow  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from argml.core.errors import Unavailable  # noqa: E402
from argml.core.files import Terminated, termination_deferred  # noqa: E402

EXPERIMENT = "argml"
MAX_BATCH = 1000  # metrics per log_batch request (MLflow's limit)
# MLflow 3's UI opens an experiment of this kind on its training runs, not on the GenAI (traces) overview.
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}


class TrackingError(Unavailable):
    """The tracking store could not record something (argml's commands print it as one line)."""


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
    elif uri.startswith(("http://", "https://")):
        check_server(uri)
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


def check_server(uri: str, timeout: float = 5) -> None:
    """Unavailable at once when nothing answers at a tracking server's address (MLflow's own client would
    retry for about two minutes first); any HTTP answer, even an error status, means it is up."""
    try:
        urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout).close()
    except urllib.error.HTTPError:
        return
    except OSError as error:
        reason = getattr(error, "reason", error)
        raise Unavailable(f"the MLflow server {uri} does not answer ({reason}): start it (`argml stack up`), or "
                          "unset MLFLOW_TRACKING_URI to use ./mlflow.db") from None


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
    with termination_deferred():
        run = _open_run(mode, params, run_id, commit, resume_file)
    try:
        yield run.info.run_id
    except (KeyboardInterrupt, Terminated):
        _end_run("KILLED")
        raise
    except BaseException:
        _end_run("FAILED")
        raise
    _end_run("FINISHED")


def _open_run(mode: str, params: dict[str, object], run_id: str | None, commit: str, resume_file: Path):
    if run_id:
        print(f"MLflow: resuming run {run_id} ({mode})")
        return mlflow.start_run(run_id=run_id)
    tags = {"age_mode": mode, "git_commit": commit, "mlflow.source.git.commit": commit}
    experiment = os.environ.get("DVC_EXP_NAME")  # set by `dvc exp run`: the same name in `dvc exp show`
    if experiment:
        tags["dvc_exp_name"] = experiment
    run = mlflow.start_run(run_name=f"{experiment}-{mode}" if experiment else mode, tags=tags)
    mlflow.log_params({key: str(value) for key, value in params.items()})
    resume_file.parent.mkdir(parents=True, exist_ok=True)
    resume_file.write_text(json.dumps({"run_id": run.info.run_id}) + "\n")
    return run


def _end_run(status: str) -> None:
    with termination_deferred():  # a second SIGTERM must not stop the status write half-way
        mlflow.end_run(status)


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
        with termination_deferred():
            client.log_batch(run_id, metrics=[mlflow.entities.Metric(key, float(value), now, step)
                                              for key, value in logs.items() if np.isscalar(value)])

    return log


def log_missing_epochs(run_id: str, history: pd.DataFrame) -> int:
    """Logs the epochs of `history` (the CSV logs, which survive a kill) that the run lacks: a kill between
    the CSV row and the MLflow call would otherwise leave a hole in the curves. An epoch's metrics go in one
    log_batch (epoch_logger), so one metric's history says which epochs the run has. Returns how many
    metrics were added."""
    client = mlflow.MlflowClient()
    metric_names = [name for name in history.columns if name not in ("epoch", "phase")]
    if not metric_names:
        return 0
    anchor = next((name for name in metric_names if history[name].notna().all()), metric_names[0])
    logged = {metric.step for metric in client.get_metric_history(run_id, anchor)}
    now = int(time.time() * 1000)
    missing = [mlflow.entities.Metric(name, float(row[name]), now, int(row["epoch"]))
               for _, row in history.iterrows() if int(row["epoch"]) not in logged
               for name in metric_names if pd.notna(row[name])]
    _log_metrics(client, run_id, missing)
    return len(missing)


def _log_metrics(client, run_id: str, metrics: list) -> None:
    for start in range(0, len(metrics), MAX_BATCH):
        with _store_errors(f"log {len(metrics[start:start + MAX_BATCH])} metrics to run {run_id}"), \
                termination_deferred():
            client.log_batch(run_id, metrics=metrics[start:start + MAX_BATCH])


def log_artifacts(run_id: str, paths: list[str | Path], folder: str | None = None) -> None:
    """Log files and folders to the run."""
    client = mlflow.MlflowClient()
    for path in map(Path, paths):
        with _store_errors(f"log {path} to run {run_id}"):
            if path.is_dir():
                client.log_artifacts(run_id, str(path), f"{folder}/{path.name}" if folder else path.name)
            elif path.exists():
                client.log_artifact(run_id, str(path), folder)


@contextlib.contextmanager
def _store_errors(what: str):
    """A store that fails (a team server or its S3 store down) raises TrackingError with one line saying so,
    not the HTTP client's retries and traceback."""
    try:
        yield
    except Exception as error:  # noqa: BLE001 - MLflow and its HTTP/S3 clients raise many kinds
        raise TrackingError(f"could not {what} at {mlflow.get_tracking_uri()}: {_first_line(error)}; is the "
                            "store up (`python -m argml.stack status`)? Rerunning the command logs it again") from error


def log_test_metrics(run_id: str, metrics: dict[str, float], prefix: str = "test") -> None:
    """All of `metrics` as `prefix.KEY`, in one request (log_batch takes up to 1000)."""
    now = int(time.time() * 1000)
    _log_metrics(mlflow.MlflowClient(), run_id,
                 [mlflow.entities.Metric(f"{prefix}.{key}", float(value), now, 0) for key, value in metrics.items()])


@contextlib.contextmanager
def reopened(run_id: str):
    """Make a finished run active again (to log a model to it) and close it as it was: `mlflow.start_run`
    on a finished run would end it again now, moving its end time (and its duration in the UI) to the
    export, hours after the training."""
    info = mlflow.MlflowClient().get_run(run_id).info
    try:
        with mlflow.start_run(run_id=run_id) as run:
            yield run
    finally:
        if info.end_time is not None:
            mlflow.MlflowClient().set_terminated(run_id, info.status, info.end_time)


def _first_line(error: BaseException) -> str:
    text = getattr(error, "message", None) or str(error) or type(error).__name__
    return text.strip().splitlines()[0][:300] if text.strip() else type(error).__name__
