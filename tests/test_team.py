"""Team mode on real engines: PostgreSQL (Debian's initdb/pg_ctl), SeaweedFS's S3 and `mlflow server` with
basic auth, all on 127.0.0.1 (argml.stack); the pipeline of the session's repository copy (conftest.pipeline_repo)
logging to the server; a DVC remote on the same S3; the whole stack restarted between a push and a teammate's
pull; a queued sweep; MirroredStrategy on two logical CPUs. (tests/test_stack.py: the engines on their own.)"""

from __future__ import annotations

import base64
import json
import shutil
import sys
import textwrap
import urllib.error
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

from conftest import DVC, PIPELINE_LIMIT, PIPELINE_PARAMS, assert_mlflow_ui_compares, repository_copy, run
from test_stack import stack  # noqa: F401 (the stack fixture: one stack for this module's tests)

pytestmark = [pytest.mark.slow, pytest.mark.extended]  # a second whole small pipeline


TEAM_LIMIT = PIPELINE_LIMIT  # the small pipeline's sample: the server, not the data, is under test


@pytest.fixture(scope="module")
def team_repo(utkface_dir, stack, tmp_path_factory):
    """A fresh copy of the repository in team mode (no local store, MLflow on the server, DVC remote on its S3)
    after a whole `dvc repro` on the small pipeline's sample (data.limit 150). -> (repo, env, seconds of that
    repro)."""
    import time

    from argml.stack import engines as team_stack

    repo = tmp_path_factory.mktemp("team") / "repo"
    env = repository_copy(repo, utkface_dir, {**PIPELINE_PARAMS, "data.limit": str(TEAM_LIMIT)})
    folder, state = stack
    env = {**env, **team_stack.client_env(state)}
    run([str(DVC), "remote", "modify", "--local", "team", "endpointurl", team_stack.s3_endpoint(state)], repo, env)
    started = time.perf_counter()
    run([str(DVC), "repro"], repo, env, timeout=2400)
    return repo, env, time.perf_counter() - started


@pytest.fixture
def as_user(stack, monkeypatch):
    def client(user):
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", user)
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", stack[1]["passwords"][user])
        import mlflow

        from argml.stack import engines as team_stack

        return mlflow.MlflowClient(tracking_uri=team_stack.tracking_uri(stack[1]))

    return client


def test_the_pipeline_logs_runs_registry_and_artifacts_to_the_server(team_repo, stack, as_user):
    from argml.stack import engines as team_stack
    from argml.tracking import registry as tracking

    repo, _, seconds = team_repo
    client = as_user("trainer")
    experiment = client.get_experiment_by_name("argml")
    assert experiment.tags.get("mlflow.experimentKind") == "custom_model_development"
    assert experiment.artifact_location.startswith("mlflow-artifacts:"), experiment.artifact_location
    runs = client.search_runs([experiment.experiment_id])
    assert sorted((r.info.run_name, r.info.status) for r in runs) == [("binned", "FINISHED"), ("exact", "FINISHED")]
    for run_info in runs:
        assert "test.gender.accuracy" in run_info.data.metrics
        assert len(client.get_metric_history(run_info.info.run_id, "val_loss")) >= 2  # per-epoch metrics
    for alias, mode in (("binned", "binned"), ("exact", "exact"), ("champion", "binned")):
        version = client.get_model_version_by_alias("argml", alias)
        assert version.tags["age_mode"] == mode
        assert version.tags["model_sha256"] == tracking.model_digest(repo / "data" / "models" / mode)
    keys = [item["Key"] for page in team_stack.s3_client(stack[1]).get_paginator("list_objects_v2").paginate(
        Bucket=team_stack.BUCKETS["mlflow"]) for item in page.get("Contents", [])]
    assert any(key.endswith("model.keras") for key in keys) and any(key.endswith("MLmodel") for key in keys)
    assert any("/evaluation/metrics.json" in key for key in keys)
    assert not (repo / "mlflow.db").exists()
    print(f"team-mode dvc repro of {TEAM_LIMIT} images: {seconds:.1f} s")


def test_unauthenticated_and_read_only_users_are_refused(team_repo, stack, as_user):
    import mlflow

    from argml.stack import engines as team_stack

    url = f"{team_stack.tracking_uri(stack[1])}/api/2.0/mlflow/experiments/get-by-name?experiment_name=argml"
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(url, timeout=10)
    assert refused.value.code == 401
    wrong = urllib.request.Request(url, headers={"Authorization": "Basic " + base64.b64encode(b"reader:wrong").decode()})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(wrong, timeout=10)
    assert refused.value.code == 401

    reader = as_user("reader")
    champion = reader.get_model_version_by_alias("argml", "champion")  # reading is allowed
    assert reader.search_runs([reader.get_experiment_by_name("argml").experiment_id])
    with pytest.raises(mlflow.exceptions.MlflowException, match="PERMISSION_DENIED|Permission denied"):
        reader.set_registered_model_alias("argml", "champion", champion.version)
    with pytest.raises(mlflow.exceptions.MlflowException, match="PERMISSION_DENIED|Permission denied"):
        reader.create_model_version("argml", champion.source, champion.run_id)
    assert as_user("trainer").get_model_version_by_alias("argml", "champion").version == champion.version


def test_the_server_ui_opens_on_the_training_runs_for_a_signed_in_reader(team_repo, stack, as_user, tmp_path):
    from argml.tracking import ui as browser
    from argml.stack import engines as team_stack

    client = as_user("reader")
    experiment = client.get_experiment_by_name("argml")
    runs = {run.info.run_name: run.info.run_id for run in client.search_runs([experiment.experiment_id])}
    base = team_stack.tracking_uri(stack[1])
    assert_mlflow_ui_compares(base, experiment.experiment_id, runs, tmp_path, "reader", stack[1]["passwords"]["reader"])
    with pytest.raises(TimeoutError):  # without credentials the UI shows nothing of the runs
        browser.open_page(browser.mlflow_pages(base, experiment.experiment_id, list(runs.values()))["runs"],
                          expect=("matching runs",), timeout=15)


def test_a_teammate_pulls_the_model_and_predicts_with_the_registered_one(team_repo, stack, utkface_dir, tmp_path):
    from argml.stack import engines as team_stack
    from argml.tracking import registry as tracking

    repo, env, _ = team_repo
    run(["git", "add", "-A"], repo, env)
    run(["git", "commit", "-q", "-m", "team-mode results"], repo, env)
    run([str(DVC), "push"], repo, env)
    pushed = team_stack.s3_client(stack[1]).list_objects_v2(Bucket=team_stack.BUCKETS["dvc"])
    assert pushed.get("KeyCount", 0) > 0

    # `make stack-down && make stack-up`: runs, registered models, their artifacts and the DVC remote stay.
    folder = stack[0]
    team_stack.down(folder)
    assert all(why is not None for why in team_stack.status(folder).values())
    assert team_stack.up(folder)["ports"] == stack[1]["ports"]  # clients keep their settings

    clone = tmp_path / "teammate"
    run(["git", "clone", "-q", str(repo), str(clone)], tmp_path, env)
    assert not (clone / "data" / "models").exists()
    env = {**env, "PYTHONPATH": str(clone)}
    run([str(DVC), "remote", "modify", "--local", "team", "endpointurl", team_stack.s3_endpoint(stack[1])], clone, env)
    run([str(DVC), "config", "--local", "cache.type", "hardlink"], clone, env)
    run([str(DVC), "pull"], clone, env)
    for mode in ("binned", "exact"):
        assert tracking.model_digest(clone / "data" / "models" / mode) == tracking.model_digest(
            repo / "data" / "models" / mode)
    assert not (clone / "mlflow.db").exists()

    images = sorted(utkface_dir.iterdir())[:3]
    out = clone / "preds.csv"
    command = [sys.executable, "-m", "argml.predict", *map(str, images), "--out", str(out),
               "--model", "models:/argml@champion"]
    _, output = run(command, clone, env)
    assert len(pd.read_csv(out)) == 3
    assert "is not the model" not in output
    assert not (clone / "mlflow.db").exists()  # the server's model, not a new local store

    # A checkout whose model is not the registered one is told so.
    shutil.copy(clone / "data" / "models" / "exact" / "model.keras", clone / "data" / "models" / "binned" / "model.keras")
    _, output = run(command, clone, env)
    assert "is not the model models:/argml@champion names" in output


def test_a_queued_sweep_logs_each_experiment_to_the_server(team_repo, stack, as_user):
    """Two experiments through `dvc exp run --queue` + `dvc queue start`: each is a run on the server carrying
    its DVC experiment name and its params, and `dvc exp show` lists the same two."""
    repo, env, _ = team_repo
    names = {"lr-low": "0.0005", "lr-high": "0.002"}
    for name, rate in names.items():
        run([str(DVC), "exp", "run", "--queue", "--name", name, "-S", f"train.head_lr={rate}",
             "-S", "train.finetune_epochs=0", "train@binned"], repo, env)
    run([str(DVC), "queue", "start", "-j", "1"], repo, env)
    _wait_for_queue(repo, env)
    shown = json.loads(run([str(DVC), "exp", "show", "--json"], repo, env)[0].stdout)
    listed = {exp["name"]: exp for base in shown for exp in (base.get("experiments") or [])
              for exp in [exp["revs"][0]] if exp.get("name")}
    assert set(names) <= set(listed), listed.keys()

    client = as_user("trainer")
    experiment = client.get_experiment_by_name("argml")
    for name, rate in names.items():
        [found] = client.search_runs([experiment.experiment_id], f"tags.dvc_exp_name = '{name}'")
        assert found.info.status == "FINISHED"
        assert float(found.data.params["train.head_lr"]) == float(rate)
        assert found.data.params["train.finetune_epochs"] == "0"


def _wait_for_queue(repo: Path, env: dict, timeout: float = 1500) -> None:
    import time

    deadline = time.time() + timeout
    while time.time() < deadline:
        status = run([str(DVC), "queue", "status"], repo, env)[0].stdout
        if "Running" not in status and "Queued" not in status:
            assert "Failed" not in status, status + run([str(DVC), "queue", "logs", "lr-low"], repo, env, check=False)[1]
            run([str(DVC), "queue", "stop"], repo, env, check=False)
            return
        time.sleep(5)
    pytest.fail(f"the queue did not finish: {status}")


MIRRORED_SCRIPT = textwrap.dedent("""
    import dataclasses, json, sys
    from pathlib import Path
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

    from argml.core.config import load_params
    from argml.core.labels import AgeMode
    from argml.model.train import train

    features_dir, scratch = sys.argv[1], Path(sys.argv[2])
    # float32: bfloat16 products (train.precision auto, on a CPU that has them) would round the two replicas'
    # partial sums apart by more than the reduction order does
    settings = dataclasses.replace(load_params(sys.argv[3]).train, head_epochs=1, finetune_epochs=1, dropout=0.0,
                                   batch_size=int(sys.argv[4]), precision="float32")
    losses = {}
    for distribute in ("none", "mirrored"):
        result = train(features_dir, scratch / distribute / "model", AgeMode.of("binned"),
                       dataclasses.replace(settings, distribute=distribute),
                       checkpoint_dir=scratch / distribute / "checkpoints", log_dir=scratch / distribute / "logs")
        losses[distribute] = result.history["loss"].tolist()
    print("LOSSES " + json.dumps(losses))
""")


def one_batch_features(source: Path, target: Path, rows: dict[str, int]) -> None:
    """A copy of the feature cache with exactly `rows[split]` binned-mode examples per split: one batch per
    epoch, so the batch order (Keras' shuffle vs argml's under the strategy) cannot differ."""
    import numpy as np

    from argml.core.labels import VARIANTS

    target.mkdir()
    shutil.copy(source / "info.json", target / "info.json")
    for split, count in rows.items():
        labels = dict(np.load(source / f"{split}.labels.npz"))
        keep = np.flatnonzero(labels["variant"] != VARIANTS["exact_age"])[:count]
        assert len(keep) == count, f"{split} has {len(keep)} binned examples"
        np.savez(target / f"{split}.labels.npz", **{key: value[keep] for key, value in labels.items()})
        for name in ("lower", "pooled"):
            np.save(target / f"{split}.{name}.npy", np.load(source / f"{split}.{name}.npy")[keep])


def test_mirrored_training_on_two_devices_matches_one_device(pipeline_repo, tmp_path):
    copy, env, _ = pipeline_repo
    features = tmp_path / "features"
    one_batch_features(copy / "data" / "features", features, {"train": 64, "val": 14, "test": 2})
    result, output = run([sys.executable, "-c", MIRRORED_SCRIPT, str(features), str(tmp_path),
                          str(copy / "params.yaml"), "64"], copy, env)
    assert "MirroredStrategy over 2 devices" in output
    losses = json.loads(output.split("LOSSES ", 1)[1].splitlines()[0])
    assert len(losses["none"]) == len(losses["mirrored"]) == 2  # one heads epoch, one fine-tuning epoch
    # Same data, order and initial weights; only the reduction order of the two replicas differs.
    assert losses["mirrored"] == pytest.approx(losses["none"], rel=1e-4)
