"""The team stack's engines on their own (argml.stack): SeaweedFS's per-user keys, everything in the stack
folder, `status` naming a dead engine, a `kill -9` of each engine during an upload (`dvc push`, an artifact
log) losing nothing acknowledged, and backup/restore into a fresh folder. Real PostgreSQL, SeaweedFS and
`mlflow server` on 127.0.0.1; no pipeline (tests/test_team.py runs the pipeline against the stack)."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest
import requests

from conftest import DVC, run

pytestmark = pytest.mark.slow


def processes_mentioning(text: str) -> list[str]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            line = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in line and str(os.getpid()) != cmdline.parent.name:
            found.append(f"{cmdline.parent.name}: {line[:200]}")
    return found


def assert_nothing_left(folder: Path, state: dict) -> None:
    from argml.stack import state as stack_state

    assert not any(stack_state.process_alive(pid) for pid in state["pids"].values())
    assert not [name for name, port in state["ports"].items() if stack_state.port_busy(port)], "a server still listens"
    assert not processes_mentioning(str(folder)), processes_mentioning(str(folder))


@pytest.fixture(scope="module")
def stack():
    """A stack on free loopback ports, in a folder the postgres user can reach (pytest's tmp is 0700)."""
    if shutil.which("initdb") is None or shutil.which("pg_ctl") is None:
        pytest.skip("PostgreSQL's initdb/pg_ctl are not installed")
    from argml.stack import engines

    folder = Path(tempfile.mkdtemp(prefix="argml-stack-"))
    try:
        state = engines.up(folder, "auto")  # a failed start stops what it started
    except BaseException:
        shutil.rmtree(folder)
        raise
    try:
        yield folder, state
    finally:
        state = engines.read_state(folder)
        engines.down(folder, purge=True)
        assert_nothing_left(folder, state)


def restart(folder: Path) -> dict:
    from argml.stack import engines

    return engines.up(folder)


def kill_engine(folder: Path, engine: str) -> None:
    """What a crash does: SIGKILL, no chance to flush or clean up (the MLflow server's workers too)."""
    from argml.stack import engines

    state = engines.read_state(folder)
    pid = engines.engine_pid(folder, state, engine)
    if engine == "postgres":
        os.kill(pid, signal.SIGKILL)
    else:
        os.killpg(pid, signal.SIGKILL)
    deadline = time.time() + 30
    while time.time() < deadline and (engines.process_alive(pid) or (
            engine == "postgres" and processes_mentioning(str(folder / "postgres")))):
        time.sleep(0.1)


def test_s3_keys_per_user_and_refusals(stack):
    from botocore.exceptions import ClientError

    from argml.stack import seaweed

    folder, state = stack
    endpoint = seaweed.endpoint(state)
    assert requests.put(f"{endpoint}/argml-dvc/unsigned", data=b"x", timeout=10).status_code == 403
    assert requests.get(f"{endpoint}/argml-dvc", timeout=10).status_code == 403
    forged = {**state, "s3_keys": {"trainer": {"key": state["s3_keys"]["trainer"]["key"], "secret": "wrong"}}}
    with pytest.raises(ClientError, match="SignatureDoesNotMatch"):
        seaweed.client(forged, "trainer").put_object(Bucket="argml-dvc", Key="forged", Body=b"x")

    def outcome(user: str, bucket: str, action: str) -> str:
        s3 = seaweed.client(state, user)
        try:
            if action == "write":
                s3.put_object(Bucket=bucket, Key=f"probe-{user}", Body=b"x")
            else:
                s3.list_objects_v2(Bucket=bucket)
        except ClientError as error:
            return error.response["Error"]["Code"]
        return "ok"

    allowed = {("mlflow", "argml-mlflow", "write"), ("mlflow", "argml-mlflow", "list"),
               ("trainer", "argml-dvc", "write"), ("trainer", "argml-dvc", "list"), ("reader", "argml-dvc", "list")}
    for user in ("mlflow", "trainer", "reader"):
        for bucket in ("argml-mlflow", "argml-dvc"):
            for action in ("write", "list"):
                expected = "ok" if (user, bucket, action) in allowed else "AccessDenied"
                assert outcome(user, bucket, action) == expected, (user, bucket, action)
    admin = seaweed.client(state)
    for user, bucket in (("mlflow", "argml-mlflow"), ("trainer", "argml-dvc")):
        admin.delete_object(Bucket=bucket, Key=f"probe-{user}")


def test_data_logs_and_sockets_stay_in_the_stack_folder(stack):
    from argml.stack import seaweed

    folder, state = stack
    assert seaweed._private_tmp_prefix(), "unshare cannot give weed a private /tmp here"
    sockets = sorted(path.name for path in (folder / "run").glob("*.sock"))
    assert len(sockets) == 7 and "filer.sock" in sockets and "s3.sock" in sockets, sockets
    grpc_ports = {port for name, port in state["ports"].items() if name.endswith("_grpc")}
    in_tmp = [path for path in Path("/tmp").glob("seaweedfs-*.sock") if int(path.stem.rsplit("-", 1)[1]) in grpc_ports]
    assert not in_tmp
    for engine in ("postgres", "s3", "mlflow"):
        assert (folder / "logs" / f"{engine}.log").stat().st_size > 0
    assert "-master.telemetry=false" in seaweed.command(folder, state)
    assert (folder / "s3-identities.json").stat().st_mode & 0o077 == 0
    assert (folder / "stack.json").stat().st_mode & 0o077 == 0


def test_status_names_the_engine_that_is_down_and_why(stack):
    folder, _ = stack
    status = [sys.executable, "-m", "argml.stack", "status", "--dir", str(folder)]
    assert subprocess.run(status, capture_output=True, text=True).returncode == 0
    kill_engine(folder, "s3")
    result = subprocess.run(status, capture_output=True, text=True)
    assert result.returncode == 1
    assert re.search(r"^s3: DOWN: not running \(process \d+ is gone\); .*s3.log ends with:", result.stdout, re.M), result.stdout
    assert "postgres: up" in result.stdout and "mlflow: up" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr
    restart(folder)
    assert subprocess.run(status, capture_output=True, text=True).returncode == 0


@pytest.fixture
def dvc_repo(stack, tmp_path):
    """A git + DVC repository with 40 files of 1 MB under data/ (`dvc add`ed), its remote on the stack's S3
    with the trainer's key. -> (repo, env)."""
    from argml.stack import engines

    folder, state = stack
    repo = tmp_path / "repo"
    (repo / "data").mkdir(parents=True)
    rng = __import__("numpy").random.default_rng(7)
    for index in range(40):
        (repo / "data" / f"part-{index:02d}.bin").write_bytes(rng.bytes(1 << 20))
    env = {**os.environ, **engines.client_env(engines.read_state(folder)),
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.invalid"}
    run(["git", "init", "-q"], repo, env)
    for command in (["init", "-q"], ["config", "core.analytics", "false"], ["config", "core.check_update", "false"],
                    ["remote", "add", "-d", "team", "s3://argml-dvc/cache"],
                    ["remote", "modify", "team", "endpointurl", engines.s3_endpoint(state)],
                    ["add", "-q", "data"]):
        run([str(DVC), *command], repo, env)
    return repo, env


def remote_objects(state: dict) -> dict[str, bytes]:
    from argml.stack import seaweed
    from argml.stack.backup import bucket_objects

    s3 = seaweed.client(state)
    return {key: s3.get_object(Bucket="argml-dvc", Key=key)["Body"].read() for key in bucket_objects(state, "argml-dvc")}


def assert_dvc_objects_whole(objects: dict[str, bytes]) -> None:
    """A DVC object's key is the md5 of its content (cache/files/md5/ab/cdef..., `.dir` for a listing)."""
    for key, content in objects.items():
        digest = "".join(key.split("/md5/")[1].split("/")).removesuffix(".dir")
        assert hashlib.md5(content).hexdigest() == digest, key


def clear_remote(state: dict) -> None:
    from argml.stack import seaweed
    from argml.stack.backup import bucket_objects

    s3 = seaweed.client(state)
    for key in bucket_objects(state, "argml-dvc"):
        s3.delete_object(Bucket="argml-dvc", Key=key)


def test_kill_9_of_s3_during_dvc_push_loses_nothing_acknowledged(stack, dvc_repo):
    from argml.stack import engines
    from argml.stack.backup import bucket_objects

    folder, _ = stack
    repo, env = dvc_repo
    state = engines.read_state(folder)
    clear_remote(state)
    # botocore retries each failed request 5 times, s3fs each call 5 times more: bounded, a dead store's
    # error comes in minutes instead of many
    env = {**env, "AWS_MAX_ATTEMPTS": "2"}
    push = subprocess.Popen([str(DVC), "push", "-j", "1"], cwd=repo, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    acknowledged: set[str] = set()
    deadline = time.time() + 300
    while time.time() < deadline and len(acknowledged) < 5 and push.poll() is None:
        acknowledged = set(bucket_objects(state, "argml-dvc"))  # listed = stored: listed once its PUT succeeded
        time.sleep(0.05)
    assert push.poll() is None, f"the push ended before the kill: {push.communicate()[0][-2000:]}"
    kill_engine(folder, "s3")
    output = push.communicate(timeout=900)[0]
    assert 5 <= len(acknowledged) < 41
    assert push.returncode != 0
    assert "ERROR" in output and "Traceback" not in output, output[-3000:]

    state = restart(folder)
    after = remote_objects(state)
    assert acknowledged <= set(after)
    assert_dvc_objects_whole(after)  # each object's content still hashes to its key
    run([str(DVC), "push", "-j", "2"], repo, env)
    assert "in sync" in run([str(DVC), "status", "-c"], repo, env)[1]
    objects = remote_objects(state)
    assert len(objects) == 41  # 40 files and the folder's listing
    assert_dvc_objects_whole(objects)


UPLOAD = textwrap.dedent("""
    import hashlib, sys
    from pathlib import Path

    import mlflow

    from argml.core.errors import command
    from argml.tracking import runs


    @command("upload")
    def main() -> int:
        folder, run_file = Path(sys.argv[1]), Path(sys.argv[2])
        client = mlflow.MlflowClient()
        if run_file.exists():
            run_id = run_file.read_text()
        else:
            experiment = client.get_experiment_by_name("kill-tests")
            experiment_id = experiment.experiment_id if experiment else client.create_experiment("kill-tests")
            run_id = client.create_run(experiment_id).info.run_id
            run_file.write_text(run_id)
        done = {item.path.rsplit("/", 1)[-1] for item in client.list_artifacts(run_id, "files")}
        for index, path in enumerate(sorted(folder.iterdir())):
            if path.name not in done:
                runs.log_artifacts(run_id, [path], "files")
                runs.log_test_metrics(run_id, {path.stem: index}, prefix="acked")
                print("ACK", path.name, hashlib.sha256(path.read_bytes()).hexdigest(), flush=True)
        return 0


    sys.exit(main())
""")


@pytest.mark.parametrize("engine", ["s3", "mlflow", "postgres"])
def test_kill_9_during_an_artifact_log_loses_nothing_acknowledged(stack, tmp_path, engine):
    """A client logs 1 MB artifacts and a metric per file through the MLflow server; `engine` is killed
    mid-way. The client ends with one line, every acknowledged file and metric is there after a restart,
    and a rerun logs the rest."""
    import mlflow

    from argml.stack import engines

    folder, _ = stack
    files = tmp_path / "files"
    files.mkdir()
    for index in range(25):
        (files / f"artifact-{index:02d}.bin").write_bytes(os.urandom(1 << 20))
    env = {**os.environ, **engines.client_env(engines.read_state(folder)),
           "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}
    command = [sys.executable, "-c", UPLOAD, str(files), str(tmp_path / "run_id")]
    client = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    acknowledged = {}
    while len(acknowledged) < 3:
        line = client.stdout.readline()
        assert line, f"the client ended early: {client.stderr.read()[-3000:]}"
        _, name, digest = line.split()
        acknowledged[name] = digest
    kill_engine(folder, engine)
    rest, errors = client.communicate(timeout=600)
    acknowledged.update({name: digest for _, name, digest in (line.split() for line in rest.splitlines())})
    assert client.returncode == 2, errors[-3000:]
    assert "Traceback" not in errors and errors.strip().splitlines()[-1].startswith("upload: could not"), errors[-3000:]
    assert len(acknowledged) < 25

    state = restart(folder)
    run_id = (tmp_path / "run_id").read_text()
    mlflow_client = mlflow.MlflowClient(tracking_uri=engines.tracking_uri(state))
    os.environ.update({key: env[key] for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")})
    try:
        def stored() -> dict[str, str]:
            download = Path(mlflow_client.download_artifacts(run_id, "files", str(tmp_path / f"got-{time.time()}")))
            return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in download.iterdir()}

        assert {name: stored().get(name) for name in acknowledged} == acknowledged
        metrics = mlflow_client.get_run(run_id).data.metrics
        assert all(f"acked.{Path(name).stem}" in metrics for name in acknowledged)
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        everything = {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in files.iterdir()}
        assert stored() == everything
        assert len(mlflow_client.get_run(run_id).data.metrics) == 25
    finally:
        for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
            os.environ.pop(key, None)


class Constant(__import__("mlflow").pyfunc.PythonModel):
    def predict(self, context, model_input):
        return model_input


def test_backup_and_restore_into_a_fresh_folder_keep_runs_registry_artifacts_and_dvc_objects(stack, dvc_repo,
                                                                                            tmp_path):
    import mlflow

    from argml.stack import backup, engines

    folder, _ = stack
    repo, env = dvc_repo
    state = engines.read_state(folder)
    run([str(DVC), "push"], repo, env)
    os.environ.update({"MLFLOW_TRACKING_USERNAME": "trainer", "MLFLOW_TRACKING_PASSWORD": state["passwords"]["trainer"]})
    restored_folder = Path(tempfile.mkdtemp(prefix="argml-restored-"))
    restored = None
    try:
        mlflow.set_tracking_uri(engines.tracking_uri(state))
        # not set_experiment: the active experiment would outlive the test in this process
        experiment_id = mlflow.MlflowClient().create_experiment("backup-tests")
        with mlflow.start_run(experiment_id=experiment_id) as training:
            mlflow.log_params({"lr": "0.001", "epochs": "3"})
            for step in range(3):
                mlflow.log_metric("loss", 1.0 / (step + 1), step=step)
            (tmp_path / "report.json").write_text('{"accuracy": 0.9}')
            mlflow.log_artifact(str(tmp_path / "report.json"), "evaluation")
            mlflow.pyfunc.log_model(name="model", python_model=Constant(), registered_model_name="argml-roundtrip")
        client = mlflow.MlflowClient()
        client.set_registered_model_alias("argml-roundtrip", "champion", 1)

        def snapshot(client, state) -> dict:
            runs = client.search_runs([client.get_experiment_by_name("backup-tests").experiment_id])
            return {"runs": sorted((r.info.run_id, r.info.status, r.info.end_time, tuple(sorted(r.data.params.items())),
                                    tuple(sorted(r.data.metrics.items()))) for r in runs),
                    "history": [(m.step, m.value) for m in client.get_metric_history(training.info.run_id, "loss")],
                    "versions": sorted((v.version, v.run_id, v.source) for v in
                                       client.search_model_versions("name='argml-roundtrip'")),
                    "champion": client.get_model_version_by_alias("argml-roundtrip", "champion").version,
                    "artifacts": backup.tree_digest(state, "argml-mlflow"), "dvc": backup.tree_digest(state, "argml-dvc")}

        before = snapshot(client, state)
        assert before["dvc"] and any(key.endswith("MLmodel") for key in before["artifacts"])
        cli = [sys.executable, "-m", "argml.stack"]
        target = tmp_path / "backup"
        result = subprocess.run([*cli, "backup", str(target), "--dir", str(folder)], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        assert (target / "mlflow.dump").exists() and (target / "manifest.json").exists()
        refused = subprocess.run([*cli, "backup", str(target), "--dir", str(folder)], capture_output=True, text=True)
        assert refused.returncode == 2 and refused.stderr.count("\n") == 1 and "exists" in refused.stderr

        result = subprocess.run([*cli, "restore", str(target), "--dir", str(restored_folder), "--ports", "auto"],
                                capture_output=True, text=True)
        assert result.returncode == 0, result.stderr[-3000:]
        restored = engines.read_state(restored_folder)
        assert restored["ports"]["mlflow"] != state["ports"]["mlflow"]
        restored_client = mlflow.MlflowClient(tracking_uri=engines.tracking_uri(restored))
        assert snapshot(restored_client, restored) == before
        report = restored_client.download_artifacts(training.info.run_id, "evaluation/report.json", str(tmp_path))
        assert Path(report).read_text() == '{"accuracy": 0.9}'

        # A teammate pulls the DVC data from the restored store with the same key as before.
        clone = tmp_path / "clone"
        shutil.copytree(repo, clone, ignore=shutil.ignore_patterns("cache", "data"))
        run([str(DVC), "remote", "modify", "team", "endpointurl", engines.s3_endpoint(restored)], clone, env)
        run([str(DVC), "pull"], clone, env)
        assert sorted(p.read_bytes() for p in (clone / "data").iterdir()) == sorted(
            p.read_bytes() for p in (repo / "data").iterdir())

        # A damaged backup is refused before anything starts.
        damaged = next((target / "buckets" / "argml-dvc").rglob("*.dir"))
        damaged.write_bytes(damaged.read_bytes() + b" ")
        result = subprocess.run([*cli, "restore", str(target), "--dir", str(tmp_path / "never")],
                                capture_output=True, text=True)
        assert result.returncode == 2 and "does not match its sha256" in result.stderr
        assert not (tmp_path / "never").exists()
    finally:
        for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
            os.environ.pop(key, None)
        mlflow.set_tracking_uri(None)
        from argml.stack import engines as stack_engines

        if (restored_folder / "stack.json").exists():
            final = stack_engines.read_state(restored_folder)
            stack_engines.down(restored_folder, purge=True)
            assert_nothing_left(restored_folder, final)
        shutil.rmtree(restored_folder, ignore_errors=True)
