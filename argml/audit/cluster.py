"""A real cluster of an engine on 127.0.0.1, started with the engine's own command line: a scheduler (head,
master) and `workers` worker processes, each its own process tree, as on separate machines. Used by the tests
and by `argml bench audit`; on real machines the same commands run once per machine (docs/audit.md).

- dask:  `dask scheduler`, then `dask worker tcp://127.0.0.1:PORT --nthreads 1` per worker;
- ray:   `ray start --head --num-cpus 0 --block`, then `ray start --address 127.0.0.1:PORT --num-cpus 1 --block`;
- spark: `spark-class ...deploy.master.Master`, then `spark-class ...deploy.worker.Worker spark://... --cores 1`.

Every process listens on 127.0.0.1 only and is stopped (SIGTERM, then SIGKILL) by `stop`, with its children.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

HOST = "127.0.0.1"
ENGINES = ("dask", "ray", "spark")


@dataclass
class Cluster:
    engine: str
    address: str
    folder: Path
    head: subprocess.Popen
    workers: list[subprocess.Popen] = field(default_factory=list)
    startup_s: float = 0.0  # from the first command to every worker registered

    def worker_trees(self) -> list[list[psutil.Process]]:
        """Per worker: the processes that make it (its command's process and everything under it)."""
        trees = []
        for process in self.workers:
            try:
                root = psutil.Process(process.pid)
                trees.append([root, *root.children(recursive=True)])
            except psutil.NoSuchProcess:
                trees.append([])
        return trees


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def command(name: str) -> str:
    """An engine's command-line tool, next to this Python first (a virtual environment's bin/)."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"the {name} command is not installed (pip install 'argml[audit]')")
    return found


def _spark_class() -> str:
    import pyspark

    return str(Path(pyspark.__file__).parent / "bin" / "spark-class")


def _start(args: list[str], env: dict, log: Path) -> subprocess.Popen:
    handle = open(log, "ab")
    # Its own session: `stop` signals the whole group, and a Ctrl-C in the terminal reaches only the driver.
    return subprocess.Popen(args, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)


def _wait(check, timeout: float, what: str, processes: list[subprocess.Popen], logs: list[Path]):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for process, log in zip(processes, logs):
            if process.poll() is not None:
                tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
                raise RuntimeError(f"{what}: {' '.join(process.args[:3])} exited ({process.returncode}):\n{tail}")
        result = check()
        if result:
            return result
        time.sleep(0.2)
    raise TimeoutError(f"{what}: not ready after {timeout:.0f} s (logs in {logs[0].parent})")


def _dask_workers(address: str) -> int:
    from distributed import Client

    try:
        with Client(address, timeout=5) as client:
            return len(client.scheduler_info(n_workers=-1)["workers"])
    except OSError:
        return 0


def start(engine: str, workers: int, folder: str | Path, env: dict | None = None, timeout: float = 180) -> Cluster:
    """A running cluster of `engine` with `workers` single-CPU workers; logs and scratch space in `folder`."""
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; use one of {', '.join(ENGINES)}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}
    started = time.monotonic()
    port = free_port()
    logs = [folder / "head.log"] + [folder / f"worker-{number}.log" for number in range(1, workers + 1)]
    if engine == "dask":
        address = f"tcp://{HOST}:{port}"
        head = _start([command("dask"), "scheduler", "--host", HOST, "--port", str(port), "--no-dashboard"],
                      env, logs[0])
        nodes = [_start([command("dask"), "worker", address, "--host", HOST, "--nthreads", "1", "--nworkers", "1",
                         "--no-dashboard", "--memory-limit", "0", "--name", f"worker-{number}",
                         "--local-directory", str(folder / f"worker-{number}")], env, log)
                 for number, log in enumerate(logs[1:], start=1)]
        ready = lambda: _dask_workers(address) >= workers  # noqa: E731
    elif engine == "ray":
        address = f"{HOST}:{port}"
        dashboard = free_port()
        env.update(RAY_USAGE_STATS_ENABLED="0")
        head = _start([command("ray"), "start", "--head", "--block", "--node-ip-address", HOST, "--port", str(port),
                       "--num-cpus", "0", "--include-dashboard", "false", "--dashboard-agent-listen-port",
                       str(dashboard), "--temp-dir", str(folder / "ray"), "--disable-usage-stats"], env, logs[0])
        _wait(lambda: (folder / "ray" / "ray_current_cluster").exists(), timeout, "ray head", [head], logs[:1])
        nodes = [_start([command("ray"), "start", "--block", "--address", address, "--node-ip-address", HOST,
                         "--num-cpus", "1", "--disable-usage-stats"], env, log) for log in logs[1:]]
        # `ray start --address` prints this once its node has registered with the head
        ready = lambda: all("Ray runtime started." in log.read_text(errors="replace") for log in logs[1:])  # noqa: E731
    else:
        address = f"spark://{HOST}:{port}"
        env.update(SPARK_LOCAL_IP=HOST, PYSPARK_PYTHON=sys.executable, SPARK_LOG_DIR=str(folder),
                   SPARK_WORKER_DIR=str(folder / "work"))
        head = _start([_spark_class(), "org.apache.spark.deploy.master.Master", "--host", HOST, "--port", str(port),
                       "--webui-port", str(free_port())], env, logs[0])
        nodes = [_start([_spark_class(), "org.apache.spark.deploy.worker.Worker", address, "--cores", "1",
                         "--memory", "4g", "--host", HOST, "--webui-port", str(free_port()),
                         "--work-dir", str(folder / f"worker-{number}")], env, log)
                 for number, log in enumerate(logs[1:], start=1)]
        ready = lambda: logs[0].read_text(errors="replace").count("Registering worker") >= workers  # noqa: E731
    cluster = Cluster(engine, address, folder, head, nodes)
    try:
        _wait(ready, timeout, f"{engine} cluster", [head, *nodes], logs)
    except BaseException:
        stop(cluster)
        raise
    cluster.startup_s = time.monotonic() - started
    return cluster


def stop(cluster: Cluster, timeout: float = 30) -> None:
    """Stop the workers, then the head: SIGTERM to each process group, SIGKILL to what is left after `timeout`."""
    for process in [*cluster.workers, cluster.head]:
        _stop_group(process, timeout)


def _stop_group(process: subprocess.Popen, timeout: float) -> None:
    try:
        members = [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        members = []
    for member in members:
        try:
            member.send_signal(signal.SIGTERM)
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(members, timeout=timeout)
    for member in alive:
        try:
            member.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=5)
    if process.poll() is None:
        process.wait(timeout=5)
