"""The whole audit on real UTKFace photos (whole 200x200 files, through detection) with the small pipeline's
registered model: in-process, resumed after a killed run, and on a real two-node dask cluster on 127.0.0.1
(`dask scheduler` and `dask worker` started as separate processes) whose worker is killed mid-shard."""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import run

PHOTOS = 240  # real photos; with the 4 bad files below, 4 shards of 64
SHARD_SIZE = 64
SHARDS = -(-(PHOTOS + 4) // SHARD_SIZE)
pytestmark = pytest.mark.slow


def png_claiming(width: int, height: int) -> bytes:
    """A small PNG whose header claims width x height pixels (a decompression bomb's first bytes)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def collection(pipeline_repo, utkface_dir, tmp_path_factory):
    """(repo, env, [PATH arguments]): real photos in a folder, the bad files, and a list naming a missing file."""
    repo, env, _ = pipeline_repo
    folder = tmp_path_factory.mktemp("collection")
    photos = folder / "photos"
    photos.mkdir()
    names = sorted(os.listdir(utkface_dir))[::97][:PHOTOS]
    for name in names:
        (photos / name).write_bytes((utkface_dir / name).read_bytes())
    whole = (utkface_dir / names[0]).read_bytes()
    (photos / "zz-unreadable.jpg").write_bytes(b"this is not an image")
    (photos / "zz-truncated.jpg").write_bytes(whole[: len(whole) // 2])
    # 10000 x 10000: over decode.max_pixels (50 M); headers over 2x Pillow's own limit (179 M) are not read as sizes
    (photos / "zz-enormous.png").write_bytes(png_claiming(10000, 10000))
    listed = folder / "more.txt"
    listed.write_text(f"{photos / names[1]}\n{folder / 'gone.jpg'}\n")  # a duplicate and a missing file
    return repo, env, [str(photos), str(listed)]


def audit(repo: Path, env: dict, paths: list[str], out: Path, *extra: str, check: bool = True):
    args = [sys.executable, "-m", "argml.audit", *paths, "--out", str(out), "--shard-size", str(SHARD_SIZE),
            "--rounds", "200", *extra]
    return run(args, repo, env, check=check, timeout=3600)


@pytest.fixture(scope="module")
def local_audit(collection, tmp_path_factory):
    repo, env, paths = collection
    out = tmp_path_factory.mktemp("local") / "audit"
    result, output = audit(repo, env, paths, out)
    return out, output


def faces_table(out: Path) -> pd.DataFrame:
    return pd.read_parquet(out / "faces.parquet").sort_values(["file", "face"]).reset_index(drop=True)


def test_an_audit_gives_rows_a_report_a_plot_and_an_mlflow_run(collection, local_audit):
    import mlflow

    repo, env, _ = collection
    out, output = local_audit
    faces = faces_table(out)
    photos = pd.read_parquet(out / "photos.parquet")
    assert len(photos) == PHOTOS + 4 and photos["file"].is_unique  # the listed duplicate is audited once
    problems = photos.set_index(photos["file"].map(lambda f: Path(f).name))["problem"]
    assert "not a readable JPEG or PNG" in problems["zz-unreadable.jpg"]
    assert "truncated JPEG" in problems["zz-truncated.jpg"]
    assert "pixels is over the limit" in problems["zz-enormous.png"]
    assert "cannot be read" in problems["gone.jpg"]
    assert "audit: skipped" in output and "4 unreadable" in output
    real = photos[~photos["file"].str.contains("zz-|gone")]
    assert (real["status"] != "unreadable").all()
    assert (real["status"] == "faces").mean() > 0.6  # most whole UTKFace photos show a face the detector finds
    assert set(faces["file"]) == set(real.loc[real["status"] == "faces", "file"])
    assert faces.groupby("file").size().to_dict() == real.set_index("file")["faces"][lambda s: s > 0].to_dict()
    for task in ("gender", "race", "age"):
        np.testing.assert_allclose([sum(p) for p in faces[f"{task}_probabilities"]], 1, atol=1e-4)
    assert faces["age_years"].between(0, 120).all() and (faces["x2"] > faces["x1"]).all()

    report = json.loads((out / "report.json").read_text())
    assert report["photos"]["faces"] == len(faces) and report["photos"]["unreadable"] == 4
    assert report["photos"]["duplicates_skipped"] == 1
    for task, shares in report["shares"].items():
        assert sum(share["share"] for share in shares["raw"].values()) == pytest.approx(1, abs=1e-3)
        counted = faces["age_bin" if task == "age" else task].value_counts(normalize=True)
        for name, share in shares["raw"].items():
            assert share["share"] == pytest.approx(counted.get(name, 0.0), abs=1e-4)
        for share in shares["corrected"].values():
            assert share["low"] - 1e-9 <= share["share"] <= share["high"] + 1e-9
    assert (out / "report.png").read_bytes()[:4] == b"\x89PNG" and "appearance-based" in (out / "report.md").read_text()

    mlflow.set_tracking_uri(f"sqlite:///{repo / 'mlflow.db'}")
    client = mlflow.MlflowClient()
    champion = client.get_model_version_by_alias("argml", "champion")
    assert report["model"]["version"] == str(champion.version)
    expected_backend = "litert" if champion.tags.get("litert_within_tolerance") == "true" else "keras"
    assert report["model"]["backend"] == expected_backend
    experiment = client.get_experiment_by_name("argml-audits")
    [logged] = client.search_runs([experiment.experiment_id])
    assert logged.info.run_id == json.loads((out / "run.json").read_text())["run_id"]
    assert logged.data.tags["model_version"] == str(champion.version)
    assert logged.data.metrics["photos.faces"] == len(faces)
    assert {item.path for item in client.list_artifacts(logged.info.run_id)} >= {"report.json", "report.md", "report.png"}


def test_a_rerun_skips_finished_shards_and_gives_the_same_report(collection, local_audit):
    repo, env, paths = collection
    out, _ = local_audit
    before = {name: (out / name).read_bytes() for name in ("report.json", "report.md", "faces.parquet", "run.json")}
    _, output = audit(repo, env, paths, out)
    assert f"0 of {SHARDS} shards run now" in output
    assert {name: (out / name).read_bytes() for name in before} == before


def test_a_killed_audit_resumes_where_it_stopped(collection, local_audit, tmp_path):
    repo, env, paths = collection
    out = tmp_path / "audit"
    args = [sys.executable, "-m", "argml.audit", *paths, "--out", str(out), "--shard-size", str(SHARD_SIZE),
            "--rounds", "200", "--no-mlflow"]
    process = subprocess.Popen(args, cwd=repo, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 1800
        while not list((out / "shards").glob("*.photos.parquet")) and time.monotonic() < deadline:
            assert process.poll() is None, "the audit ended before it could be killed"
            time.sleep(0.5)
    finally:
        process.kill()
        process.wait()
    done = sorted(path.name for path in (out / "shards").glob("*.photos.parquet"))
    assert 1 <= len(done) < SHARDS
    _, output = audit(repo, env, paths, out, "--no-mlflow")
    assert f"{SHARDS - len(done)} of {SHARDS} shards run now" in output
    reference, _ = local_audit
    assert (out / "report.json").read_text() == (reference / "report.json").read_text()
    pd.testing.assert_frame_equal(faces_table(out), faces_table(reference))
    assert not list(out.rglob(".*.*"))  # no staging file of the killed run survives


def test_a_two_node_dask_cluster_gives_the_same_rows_and_retries_a_killed_worker(collection, local_audit, tmp_path):
    from distributed import Client

    from argml.audit import cluster

    repo, env, paths = collection
    nodes = cluster.start("dask", 1, tmp_path / "cluster", env={"PYTHONPATH": env["PYTHONPATH"]})
    out = tmp_path / "audit"
    try:
        args = [sys.executable, "-m", "argml.audit", *paths, "--out", str(out), "--shard-size", str(SHARD_SIZE),
                "--rounds", "200", "--no-mlflow", "--engine", "dask", "--address", nodes.address]
        driver = subprocess.Popen(args, cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        killed = None
        with Client(nodes.address, timeout=30) as client:
            deadline = time.monotonic() + 1800
            while killed is None and time.monotonic() < deadline and driver.poll() is None:
                running = [key for keys in client.processing().values() for key in keys]
                if list((out / "shards").glob("*.photos.parquet")) and running:
                    [pid] = client.run(os.getpid).values()
                    os.kill(pid, signal.SIGKILL)  # the worker process, mid-shard
                    killed = running[0]
                time.sleep(0.2)
        output, _ = driver.communicate(timeout=1800)
        assert driver.returncode == 0, output[-3000:]
        assert killed is not None, "the worker was never seen mid-shard"
    finally:
        cluster.stop(nodes)
    assert all(process.poll() is not None for process in [nodes.head, *nodes.workers])
    worker_log = (tmp_path / "cluster" / "worker-1.log").read_text()
    assert "restart" in worker_log.lower()  # the nanny restarted the killed worker; the scheduler re-ran its shard
    reference, _ = local_audit
    local, remote = faces_table(reference), faces_table(out)
    pd.testing.assert_frame_equal(remote.drop(columns=[c for c in remote if c.endswith("probabilities")]),
                                  local.drop(columns=[c for c in local if c.endswith("probabilities")]))
    for column in [c for c in local if c.endswith("probabilities")]:
        np.testing.assert_allclose(np.stack(remote[column]), np.stack(local[column]), atol=1e-6)
    photos = pd.read_parquet(out / "photos.parquet")
    assert photos["file"].is_unique and len(photos) == PHOTOS + 4  # every shard written once
    assert json.loads((out / "report.json").read_text())["shares"] == json.loads(
        (reference / "report.json").read_text())["shares"]
