"""`argml bench stack`: the team stack under a training team's load, on loopback only.

Load: `--clients` processes (default 8) for `--seconds` (default 60), each with its own MLflow run, as the
`trainer` user: params once, then in a loop a batch of metrics (`--batch`: 10 keys x N steps) and, every
`--artifact-every` batches, a `--artifact-mb` MB artifact (random bytes). Every request's latency is kept;
afterwards every acknowledged metric and artifact is looked up (metric histories through the server, artifact
md5s in the S3 bucket): `lost` must be 0. Repeated `--runs` times.

Transfer: `dvc push` and `dvc fetch` (into a fresh clone's empty cache) through the stack's S3 with the
trainer's key, in MB/s: of `--dvc-repo PATH` (a checkout with a full DVC cache, e.g. after `dvc repro` on the
whole dataset), else of a repository made from `--dvc-images` real UTKFace images ($ARGML_UTKFACE).

Without `--stack DIR` (a running stack) it starts a stack on free 127.0.0.1 ports in a temporary folder and
stops it at the end.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from argml.bench.report import describe, spread

METRIC_KEYS = 10


def add_arguments(parser) -> None:
    parser.add_argument("--stack", help="a running stack's folder (default: start one in a temporary folder)")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--runs", type=int, default=3, help="load runs (each --seconds long)")
    parser.add_argument("--batch", type=int, default=50, help="metrics per log_batch request")
    parser.add_argument("--artifact-every", type=int, default=5, help="one artifact per this many metric batches")
    parser.add_argument("--artifact-mb", type=float, default=1.0)
    parser.add_argument("--dvc-repo", help="a DVC checkout whose cache to push and fetch (the full-data cache)")
    parser.add_argument("--dvc-images", type=int, default=3000, help="without --dvc-repo: UTKFace images to push")
    parser.add_argument("--dvc-runs", type=int, default=3)


def _client(args: tuple) -> dict:
    """One client's loop (a separate process): -> latencies per kind, errors, and what was acknowledged."""
    env, experiment_id, barrier, seconds, batch, artifact_every, artifact_bytes, index = args
    os.environ.update(env)
    import mlflow
    from mlflow.entities import Metric, Param

    client = mlflow.MlflowClient()
    latencies: dict[str, list[float]] = {"params": [], "metrics": [], "artifact": []}
    acked_metrics, acked_artifacts, errors = 0, {}, []
    run_id = client.create_run(experiment_id, run_name=f"bench-client-{index}").info.run_id
    scratch = Path(tempfile.mkdtemp(prefix="argml-bench-"))
    barrier.wait()  # every client has imported MLflow and opened its run: all start together
    began = time.time()
    deadline = began + seconds

    def timed(kind: str, call) -> bool:
        began = time.perf_counter()
        try:
            call()
        except Exception as error:  # noqa: BLE001 - every failure is counted, not raised
            errors.append(f"{kind}: {str(error).splitlines()[0][:200] if str(error) else type(error).__name__}")
            return False
        latencies[kind].append(time.perf_counter() - began)
        return True

    timed("params", lambda: client.log_batch(run_id, params=[Param(f"param_{i}", str(i)) for i in range(20)]))
    step, iteration = 0, 0
    while time.time() < deadline:
        steps = max(1, batch // METRIC_KEYS)
        now = int(time.time() * 1000)
        metrics = [Metric(f"metric_{k}", float(step + s) / (k + 1), now, step + s)
                   for s in range(steps) for k in range(METRIC_KEYS)]
        if timed("metrics", lambda: client.log_batch(run_id, metrics=metrics)):
            acked_metrics += len(metrics)
        step += steps
        iteration += 1
        if iteration % artifact_every == 0 and time.time() < deadline:
            path = scratch / f"artifact-{iteration:05d}.bin"
            path.write_bytes(os.urandom(artifact_bytes))
            if timed("artifact", lambda: client.log_artifact(run_id, str(path), "bench")):
                acked_artifacts[path.name] = hashlib.md5(path.read_bytes()).hexdigest()
            path.unlink()
    client.set_terminated(run_id)
    shutil.rmtree(scratch, ignore_errors=True)
    return {"run_id": run_id, "latencies": latencies, "errors": errors, "metrics": acked_metrics,
            "artifacts": acked_artifacts, "began": began}


def _arrived(state: dict, experiment_id: str, result: dict) -> tuple[int, int]:
    """(metrics, artifacts) of one client's acknowledged ones that the stack has: metric histories through the
    server, artifact md5s (ETags) in the bucket."""
    import mlflow

    from argml.stack import seaweed

    client = mlflow.MlflowClient()
    metrics = sum(len(client.get_metric_history(result["run_id"], f"metric_{k}")) for k in range(METRIC_KEYS))
    s3 = seaweed.client(state)
    prefix = f"artifacts/{experiment_id}/{result['run_id']}/artifacts/bench/"
    stored = {item["Key"].rsplit("/", 1)[-1]: item["ETag"].strip('"')
              for page in s3.get_paginator("list_objects_v2").paginate(Bucket="argml-mlflow", Prefix=prefix)
              for item in page.get("Contents", [])}
    artifacts = sum(stored.get(name) == md5 for name, md5 in result["artifacts"].items())
    return metrics, artifacts


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))] if ordered else float("nan")


def load_run(state: dict, args) -> dict:
    """One load run: the clients at once for args.seconds; -> its figures."""
    import mlflow

    from argml.stack import engines

    env = engines.client_env(state, "trainer")
    os.environ.update(env)  # this process creates the experiment and checks what arrived, as the trainer
    experiment_id = mlflow.MlflowClient().create_experiment(f"bench-stack-{uuid.uuid4().hex[:8]}")
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager, concurrent.futures.ProcessPoolExecutor(args.clients, mp_context=context) as pool:
        barrier = manager.Barrier(args.clients)
        jobs = [(env, experiment_id, barrier, args.seconds, args.batch, args.artifact_every,
                 int(args.artifact_mb * 2**20), index) for index in range(args.clients)]
        results = list(pool.map(_client, jobs))
    spread_start = max(r["began"] for r in results) - min(r["began"] for r in results)
    acked = {"metrics": sum(r["metrics"] for r in results), "artifacts": sum(len(r["artifacts"]) for r in results)}
    arrived = [_arrived(state, experiment_id, result) for result in results]
    arrived_total = {"metrics": sum(m for m, _ in arrived), "artifacts": sum(a for _, a in arrived)}
    latencies = {kind: [x for r in results for x in r["latencies"][kind]] for kind in ("params", "metrics", "artifact")}
    requests = sum(len(values) for values in latencies.values())
    errors = [error for r in results for error in r["errors"]]
    figures = {"requests": requests, "requests_per_s": round(requests / args.seconds, 1), "errors": len(errors),
               "client_start_spread_s": round(spread_start, 3),
               "error_examples": errors[:5], "acknowledged": acked, "arrived": arrived_total,
               "lost": {kind: acked[kind] - arrived_total[kind] for kind in acked},
               "latency_ms": {kind: {"p50": round(1000 * _percentile(values, 0.5), 1),
                                     "p99": round(1000 * _percentile(values, 0.99), 1), "count": len(values)}
                              for kind, values in latencies.items() if kind != "params"}}
    print(f"load: {figures['requests_per_s']} requests/s, errors {len(errors)}, acknowledged {acked}, arrived "
          f"{arrived_total}, latency {figures['latency_ms']}")
    return figures


def _dvc(*args: str, cwd: Path, env: dict) -> None:
    dvc = Path(sys.executable).with_name("dvc")
    result = subprocess.run([str(dvc), *args], cwd=cwd, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"dvc {' '.join(args)} failed in {cwd}: {(result.stdout + result.stderr).strip()[-1500:]}")


def _image_repo(folder: Path, count: int, env: dict) -> Path:
    """A git + DVC repository holding `count` real UTKFace images under data/ (committed, cache filled)."""
    from argml.bench.report import utkface_folder

    source = utkface_folder("stack")
    repo = folder / "images-repo"
    (repo / "data").mkdir(parents=True)
    for name in sorted(os.listdir(source))[:count]:
        shutil.copyfile(source / name, repo / "data" / name)
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    _dvc("init", "-q", cwd=repo, env=env)
    _dvc("config", "core.analytics", "false", cwd=repo, env=env)
    _dvc("add", "-q", "data", cwd=repo, env=env)
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True)
    subprocess.run(["git", "-c", "user.name=bench", "-c", "user.email=bench@example.invalid", "commit", "-q", "-m",
                    "bench data"], cwd=repo, check=True)
    return repo


def _cache_bytes(repo: Path) -> tuple[int, int]:
    files = [p for p in (repo / ".dvc" / "cache" / "files").rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def transfer_runs(state: dict, args, scratch: Path) -> dict:
    """dvc push and dvc fetch of the whole cache, each into/out of a fresh remote prefix; -> figures."""
    from argml.stack import engines, seaweed
    from argml.stack.backup import bucket_objects

    env = {**os.environ, **engines.client_env(state, "trainer")}
    repo = Path(args.dvc_repo).resolve() if args.dvc_repo else _image_repo(scratch, args.dvc_images, env)
    objects, size = _cache_bytes(repo)
    seconds: dict[str, list[float]] = {"push": [], "fetch": []}
    for index in range(args.dvc_runs):
        remote = f"bench-{uuid.uuid4().hex[:8]}"
        url = f"s3://argml-dvc/{remote}"
        clone = scratch / f"clone-{index}"
        subprocess.run(["git", "clone", "-q", str(repo), str(clone)], check=True)
        for where in (repo, clone):
            _dvc("remote", "add", "--local", "-f", remote, url, cwd=where, env=env)
            _dvc("remote", "modify", "--local", remote, "endpointurl", seaweed.endpoint(state), cwd=where, env=env)
        try:
            began = time.perf_counter()
            _dvc("push", "-r", remote, cwd=repo, env=env)
            seconds["push"].append(time.perf_counter() - began)
            began = time.perf_counter()
            _dvc("fetch", "-r", remote, cwd=clone, env=env)
            seconds["fetch"].append(time.perf_counter() - began)
            fetched = _cache_bytes(clone)
            if fetched != (objects, size):
                raise RuntimeError(f"dvc fetch brought {fetched} (objects, bytes), pushed {(objects, size)}")
        finally:
            _dvc("remote", "remove", "--local", remote, cwd=repo, env=env)
            s3 = seaweed.client(state)
            for key in bucket_objects(state, "argml-dvc"):
                if key.startswith(remote + "/"):
                    s3.delete_object(Bucket="argml-dvc", Key=key)
            shutil.rmtree(clone, ignore_errors=True)
        print(f"dvc: push {size / 1e6 / seconds['push'][-1]:.1f} MB/s, fetch {size / 1e6 / seconds['fetch'][-1]:.1f} MB/s")
    return {"repo": str(args.dvc_repo or f"{args.dvc_images} UTKFace images"), "objects": objects,
            "mb": round(size / 1e6, 1),
            **{f"{kind}_mb_per_s": spread([size / 1e6 / s for s in values], 1) for kind, values in seconds.items()},
            **{f"{kind}_seconds": spread(values, 1) for kind, values in seconds.items()}}


def run(args) -> dict:
    from argml.stack import engines

    load_before = os.getloadavg()  # other work on the machine shows here: these figures share its cores
    with tempfile.TemporaryDirectory(prefix="argml-bench-stack-") as scratch:
        folder = Path(args.stack) if args.stack else Path(scratch) / "stack"
        os.chmod(scratch, 0o755)  # as root, the postgres user must reach the stack folder
        state = engines.read_state(folder) if args.stack else engines.up(folder, "auto")
        try:
            loads = [load_run(state, args) for _ in range(args.runs)]
            transfer = transfer_runs(state, args, Path(scratch))
        finally:
            if not args.stack:
                engines.down(folder)
    figures = {"load_runs": loads,
               "requests_per_s": spread([run["requests_per_s"] for run in loads], 1),
               "metrics_p50_ms": spread([run["latency_ms"]["metrics"]["p50"] for run in loads], 1),
               "metrics_p99_ms": spread([run["latency_ms"]["metrics"]["p99"] for run in loads], 1),
               "artifact_p50_ms": spread([run["latency_ms"]["artifact"]["p50"] for run in loads], 1),
               "artifact_p99_ms": spread([run["latency_ms"]["artifact"]["p99"] for run in loads], 1),
               "errors": sum(run["errors"] for run in loads),
               "lost": {kind: sum(run["lost"][kind] for run in loads) for kind in ("metrics", "artifacts")},
               "dvc": transfer, "load_average_before_after": [round(load_before[0], 1), round(os.getloadavg()[0], 1)]}
    print(f"stack load, {args.clients} clients x {args.seconds:.0f} s: {describe(figures['requests_per_s'], 'requests/s')}; "
          f"metrics p50 {statistics.median([r['latency_ms']['metrics']['p50'] for r in loads])} ms; "
          f"errors {figures['errors']}, lost {figures['lost']}")
    return figures
