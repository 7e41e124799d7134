"""Kill-safety and params safety of the real pipeline, on the session's repository copy (conftest.pipeline_repo):
a params typo stops `dvc repro` before any output is removed; a SIGTERM to dvc stops the running stage and
removes its staging folder; a killed training resumes without redoing finished work, in the same MLflow run."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from conftest import DVC, run, set_param

pytestmark = pytest.mark.slow


def wait_for(predicate, timeout: float, process: subprocess.Popen | None = None) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        if process is not None and process.poll() is not None:
            pytest.fail(f"process ended ({process.returncode}) before the awaited moment:\n"
                        f"{process.stdout.read()[-4000:]}")
        time.sleep(0.05)
    pytest.fail("timed out")


def processes_running(fragment: str, cwd: Path) -> list[int]:
    """Live processes whose command line holds `fragment` and that run in `cwd` (this test's copy only)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                state = (entry / "stat").read_text().split()[2]
                where = Path(os.readlink(entry / "cwd"))
            except OSError:
                continue
            if fragment in cmdline and state != "Z" and where == cwd:
                found.append(int(entry.name))
    return found


@pytest.mark.parametrize("edit, named", [
    (lambda p: set_param(p, "features.batch_size", '"big"'), "features.batch_size"),
    (lambda p: p.write_text(p.read_text().replace("  head_lr:", "  lerning_rate: 0.1\n  head_lr:")),
     "train.lerning_rate"),
    (lambda p: p.write_text(p.read_text().replace("\ntrain:", "\ntrian:")), "trian"),
    (lambda p: set_param(p, "data.limit", "-5"), "data.limit"),
])
def test_a_params_typo_stops_repro_before_any_output_is_removed(pipeline_repo, edit, named):
    copy, env, _ = pipeline_repo
    params = copy / "params.yaml"
    original = params.read_text()
    try:
        edit(params)
        result, output = run([str(DVC), "repro"], copy, env, check=False)
        assert result.returncode != 0, output
        assert named in output and "no stage ran and no output was removed" in output, output
        running = [line for line in output.splitlines() if line.startswith("Running stage")]
        assert running == ["Running stage 'params':"], running
        assert (copy / "data" / "features" / "info.json").exists()
        assert (copy / "data" / "models" / "binned" / "model.keras").exists()
        assert (copy / "reports" / "binned" / "history.csv").exists()
    finally:
        params.write_text(original)
    run([str(DVC), "repro", "params"], copy, env)


def test_sigterm_to_dvc_stops_the_stage_and_removes_its_staging(pipeline_repo):
    copy, env, _ = pipeline_repo
    dvc = subprocess.Popen([str(DVC), "repro", "--force", "--single-item", "features"], cwd=copy, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    staging = lambda: list((copy / "data").glob(".features.*"))  # noqa: E731
    try:
        wait_for(lambda: staging() and list(staging()[0].glob("*.npy")), 180, dvc)
        dvc.send_signal(signal.SIGTERM)
        dvc.wait(timeout=30)
        wait_for(lambda: not processes_running("stages/features.py", copy), 30)
        wait_for(lambda: not staging(), 30)
    finally:
        if dvc.poll() is None:
            dvc.kill()
        for pid in processes_running("stages/features.py", copy):
            os.kill(pid, signal.SIGKILL)
    run([str(DVC), "repro", "--single-item", "features"], copy, env)  # leave the copy whole for later tests
    assert (copy / "data" / "features" / "info.json").exists()


def test_killed_training_resumes_in_the_same_run_with_a_true_history(pipeline_repo, tmp_path):
    import mlflow

    copy, env, _ = pipeline_repo
    shutil.copytree(copy / "data" / "features", tmp_path / "data" / "features")
    shutil.copy(copy / "params.yaml", tmp_path / "params.yaml")
    for dotted, value in {"train.head_epochs": "3", "train.finetune_epochs": "4", "train.patience": "10"}.items():
        set_param(tmp_path / "params.yaml", dotted, value)
    env = {**env, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}", "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, str(copy / "stages" / "train.py"), "binned", "data/features", "data/models/binned",
               "reports/binned"]
    checkpoints = tmp_path / "data" / "checkpoints" / "binned"
    finished_finetune_epochs = lambda: (len((checkpoints / "finetune.csv").read_text().splitlines()) - 1  # noqa: E731
                                        if (checkpoints / "finetune.csv").exists() else 0)

    def start():
        return subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)

    client = mlflow.MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    runs = lambda: client.search_runs(  # noqa: E731
        [client.get_experiment_by_name("argml").experiment_id])

    first = start()  # SIGTERM during fine-tuning: the run is KILLED, the checkpoints stay
    wait_for(lambda: finished_finetune_epochs() >= 1, 300, first)
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=60) == 128 + signal.SIGTERM, first.stdout.read()[-3000:]
    [killed] = runs()
    assert killed.info.status == "KILLED"
    heads_log = (checkpoints / "heads.csv").read_text()
    assert len(heads_log.splitlines()) == 1 + 3

    second = start()  # SIGKILL: nothing can close the run; the next start reopens it
    wait_for(lambda: finished_finetune_epochs() >= 2, 300, second)
    second.kill()
    second.wait(timeout=30)
    assert "resuming; the heads phase finished before" in second.stdout.read()
    assert [r.info.status for r in runs()] == ["RUNNING"]

    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "resuming; the heads phase finished before" in output and f"resuming run {killed.info.run_id}" in output
    history = pd.read_csv(tmp_path / "reports" / "binned" / "history.csv")
    assert history["epoch"].tolist() == list(range(1, 8))
    assert history["phase"].tolist() == ["heads"] * 3 + ["finetune"] * 4
    [finished] = runs()
    assert finished.info.run_id == killed.info.run_id and finished.info.status == "FINISHED"
    steps = sorted(m.step for m in client.get_metric_history(finished.info.run_id, "val_loss"))
    assert steps == list(range(1, 8)), steps
    assert not checkpoints.exists(), "finished training leaves no checkpoints behind"


def test_epochs_missing_from_the_run_are_logged_from_the_history(tmp_path, monkeypatch):
    """A kill between an epoch's CSV row and its MLflow call leaves a hole that the final history fills."""
    import mlflow

    from argml.tracking import runs as tracking

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    client = mlflow.MlflowClient()
    run_id = client.create_run(client.create_experiment("holes")).info.run_id
    log_epoch = tracking.epoch_logger(run_id)
    for step in (1, 2, 3, 5):
        log_epoch(step, {"loss": 1.0 / step, "val_loss": 2.0 / step})
    history = pd.DataFrame({"epoch": range(1, 6), "phase": ["heads"] * 5,
                            "loss": [1.0 / s for s in range(1, 6)], "val_loss": [2.0 / s for s in range(1, 6)]})

    assert tracking.log_missing_epochs(run_id, history) == 2
    assert tracking.log_missing_epochs(run_id, history) == 0
    for name in ("loss", "val_loss"):
        points = sorted((m.step, m.value) for m in client.get_metric_history(run_id, name))
        assert points == [(step, history.loc[step - 1, name]) for step in range(1, 6)]


# --- kill-safety of every stage ------------------------------------------------------------------------------

STAGING = re.compile(r"^\.[^/]+\.[a-z0-9_]{8}(\.[a-z0-9]+)?$")  # atomic_dir / atomic_path's staging names


def stage_outputs(repo: Path) -> dict[str, list[Path]]:
    """{stage script name: its outputs} from dvc.yaml (outs and metrics; matrix stages expanded)."""
    import yaml

    stages = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]
    found: dict[str, list[Path]] = {}
    for name, stage in stages.items():
        items = [{"mode": mode} for mode in stage["matrix"]["mode"]] if "matrix" in stage else [{}]
        for item in items:
            for entry in stage.get("outs", []) + stage.get("metrics", []):
                path = next(iter(entry)) if isinstance(entry, dict) else entry
                path = path.replace("${item.mode}", item.get("mode", ""))
                found.setdefault(name, []).append(repo / path)
    return found


def test_every_stage_is_a_stage_process():
    """Each stage script's main is wrapped by @stage: it dies with dvc, and SIGTERM unwinds it (removing its
    staging) instead of killing it mid-write."""
    repo = Path(__file__).resolve().parents[1]
    for script in sorted((repo / "stages").glob("*.py")):
        assert f'@stage("{script.stem}")\ndef main() -> int:' in script.read_text(), script.name


def test_no_stage_writes_an_output_in_place(pipeline_repo):
    """The session's `dvc repro` ran with tests/write_audit: every file its stage processes opened for
    writing inside a declared output is inside a staging folder or file, and every output arrived by a
    rename from one, so a stage stopped at any moment leaves the old output or none, never half of one.
    (Writes from native code, such as TensorBoard's event files, are not seen by the audit.)"""
    import json

    from conftest import write_log

    copy, _, _ = pipeline_repo
    # TensorBoard's event files are appended as training goes, by design (DVC removes them before a rerun).
    outputs = [path for paths in stage_outputs(copy).values() for path in paths if path.name != "tensorboard"]
    entries = [json.loads(line) for line in write_log(copy).read_text().splitlines()]
    stage_entries = [e for e in entries if "stages/" in " ".join(e["argv"]) or "multiprocessing" in " ".join(e["argv"])]
    assert {Path(e["argv"][0]).stem for e in stage_entries if e["argv"][0].endswith(".py")} >= {
        "download", "labels", "align", "augment", "tfrecords", "features", "train", "evaluate", "export",
        "champion", "demo", "leakage", "params"}, "the audit saw every stage"

    def output_of(path: Path) -> Path | None:
        return next((out for out in outputs if path == out or out in path.parents), None)

    def staged(path: Path, output: Path) -> bool:
        return any(STAGING.match(part) for part in path.relative_to(output.parent).parts)

    in_place, renamed_in = [], []
    for entry in stage_entries:
        target = Path(entry["paths"][-1])
        output = output_of(target)
        if output is None:
            continue
        if entry["kind"] == "write" and not staged(target, output):
            in_place.append((entry["argv"][0], str(target.relative_to(copy))))
        if entry["kind"] == "rename" and not staged(Path(entry["paths"][0]), output) and not staged(target, output):
            renamed_in.append((entry["argv"][0], entry["paths"]))
    assert in_place == [] and renamed_in == [], (in_place[:10], renamed_in[:10])
    written = {output_of(Path(e["paths"][-1])) for e in stage_entries if e["kind"] == "rename"} - {None}
    assert len(written) >= 25, sorted(map(str, written))  # the audit saw the outputs arrive
