"""argml.tracking against a real (SQLite) MLflow store: what team mode made cheaper or safer. Missing epochs
found from one metric's history, test metrics in one request, a reopened run keeping its end time, the
model-file sha256 computed once per file version, and a store that fails giving one clear error."""

from __future__ import annotations

import os
import time

import mlflow
import pandas as pd
import pytest

from argml.tracking import registry, runs


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.chdir(tmp_path)
    runs.configure(create=True)
    yield mlflow.MlflowClient()
    mlflow.set_tracking_uri(None)


def count_calls(monkeypatch, owner, name: str) -> list:
    calls = []
    original = getattr(owner, name)

    def counted(*args, **kwargs):
        calls.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, counted)
    return calls


def test_missing_epochs_are_found_from_one_metric_history(store, monkeypatch):
    run_id = store.create_run(mlflow.get_experiment_by_name(runs.EXPERIMENT).experiment_id).info.run_id
    log = runs.epoch_logger(run_id)
    for epoch in (0, 1):
        log(epoch, {"loss": 1.0 / (epoch + 1), "val_loss": 2.0, "gender_accuracy": 0.5 + epoch / 10})
    history = pd.DataFrame({"epoch": [0, 1, 2, 3], "phase": ["heads"] * 4, "loss": [1.0, 0.5, 0.33, 0.25],
                            "val_loss": [2.0, 2.0, 1.9, 1.8], "gender_accuracy": [0.5, 0.6, 0.7, float("nan")]})
    asked = count_calls(monkeypatch, mlflow.MlflowClient, "get_metric_history")
    assert runs.log_missing_epochs(run_id, history) == 5  # epochs 2 and 3, the NaN skipped
    assert len(asked) == 1
    for name in ("loss", "val_loss"):
        assert sorted(m.step for m in store.get_metric_history(run_id, name)) == [0, 1, 2, 3]
    assert sorted(m.step for m in store.get_metric_history(run_id, "gender_accuracy")) == [0, 1, 2]
    assert runs.log_missing_epochs(run_id, history) == 0


def test_test_metrics_go_in_one_request(store, monkeypatch):
    run_id = store.create_run(mlflow.get_experiment_by_name(runs.EXPERIMENT).experiment_id).info.run_id
    batches = count_calls(monkeypatch, mlflow.MlflowClient, "log_batch")
    metrics = {f"group_{i}.accuracy": i / 40 for i in range(40)}
    runs.log_test_metrics(run_id, metrics)
    assert len(batches) == 1
    assert store.get_run(run_id).data.metrics == {f"test.{key}": value for key, value in metrics.items()}


def test_a_reopened_run_keeps_its_end_time(store):
    experiment_id = mlflow.get_experiment_by_name(runs.EXPERIMENT).experiment_id
    trained = store.create_run(experiment_id).info.run_id
    store.set_terminated(trained, "FINISHED")
    ended = store.get_run(trained).info.end_time
    time.sleep(0.05)
    with runs.reopened(trained):
        mlflow.log_param("exported", "yes")
    info = store.get_run(trained)
    assert (info.info.end_time, info.info.status, info.data.params["exported"]) == (ended, "FINISHED", "yes")
    with mlflow.start_run(run_id=trained):  # what it replaces: MLflow ends the run again, now
        pass
    assert store.get_run(trained).info.end_time > ended


def test_model_sha256_is_computed_once_per_file_version(tmp_path, monkeypatch):
    monkeypatch.setenv("ARGML_CACHE", str(tmp_path / "cache"))
    model = tmp_path / "model"
    model.mkdir()
    (model / "model.keras").write_bytes(os.urandom(1 << 20))
    (model / "model.json").write_text("{}")
    hashed = count_calls(monkeypatch, registry, "file_digest")
    first = registry.model_digest(model)
    assert len(hashed) == 2
    assert registry.model_digest(model) == first and len(hashed) == 2  # nothing changed: nothing re-read
    stat = (model / "model.keras").stat()
    with open(model / "model.keras", "r+b") as handle:  # same size, mtime put back: ctime still moves
        handle.write(b"\0" * 16)
    os.utime(model / "model.keras", ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert registry.model_digest(model) != first and len(hashed) == 3


def test_a_store_that_is_down_gives_one_clear_error(tmp_path, monkeypatch):
    from argml.stack.state import free_port

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    mlflow.set_tracking_uri(f"http://127.0.0.1:{free_port()}")
    (tmp_path / "report.json").write_text("{}")
    try:
        with pytest.raises(runs.TrackingError, match=r"could not log .*report.json .*argml.stack status") as error:
            runs.log_artifacts("0" * 32, [tmp_path / "report.json"])
        assert len(str(error.value).splitlines()) == 1
        with pytest.raises(runs.TrackingError, match="could not log 1 metrics"):
            runs.log_test_metrics("0" * 32, {"accuracy": 1.0})
    finally:
        mlflow.set_tracking_uri(None)
