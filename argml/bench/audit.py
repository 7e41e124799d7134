"""`argml bench audit`: photos/s of `argml audit` in this process and on loopback clusters of 1 and 2 workers,
with each worker's memory, and what each scale-out engine costs (install size, cluster start-up).

Real UTKFace photos ($ARGML_UTKFACE, whole 200x200 files, through detection and classification) in shards of
`--shard-size`; every configuration is warmed up first (models loaded on each worker), then timed `--runs`
times over `--photos` photos. Clusters are started with the engine's own command line on 127.0.0.1
(argml.audit.cluster: one single-CPU worker process tree per worker); memory is the largest PSS a worker's
process tree reached (shared pages split between processes), sampled every half second. `--engines` takes
any of dask, ray, spark that are installed (argml installs dask, the one measured in docs/audit.md; ray and
spark run where their own packages are installed).
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import os
import tempfile
import threading
import time
from pathlib import Path

import psutil

from argml.audit import cluster
from argml.bench.report import describe, spread, utkface_folder

ENGINE_PACKAGES = {  # what each engine adds to argml's environment (its dependencies argml does not have)
    "dask": ("dask", "distributed", "locket", "msgpack", "partd", "sortedcontainers", "tblib", "toolz", "tornado",
             "zict"),
    "ray": ("ray", "msgpack"),
    "spark": ("pyspark", "py4j"),
}


def add_arguments(parser) -> None:
    parser.add_argument("--photos", type=int, default=384, help="photos per timed run")
    parser.add_argument("--shard-size", type=int, default=32)
    parser.add_argument("--runs", type=int, default=3, help="timed runs per configuration")
    parser.add_argument("--engines", nargs="+", default=["dask"], choices=cluster.ENGINES)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="cluster sizes to time")
    parser.add_argument("--model", default="models:/argml@champion")
    parser.add_argument("--params", default="params.yaml")


def installed_mb(packages) -> float | None:
    """The size on disk of the packages' installed files; None when one is not installed."""
    total = 0
    for name in packages:
        try:
            files = importlib.metadata.distribution(name).files or []
        except importlib.metadata.PackageNotFoundError:
            return None
        total += sum(file.locate().stat().st_size for file in files if file.locate().is_file())
    return round(total / 2**20, 1)


def java_mb() -> float | None:
    """The size of the Java runtime Spark needs (the JDK/JRE folder `java` on PATH lives in)."""
    import shutil

    java = shutil.which("java")
    if java is None:
        return None
    home = Path(os.path.realpath(java)).parents[1]
    return round(sum(path.stat().st_size for path in home.rglob("*") if path.is_file()) / 2**20, 1)


class MemorySampler:
    """The largest PSS (MiB) each process tree reached while it ran, sampled every `interval` seconds."""

    def __init__(self, trees, interval: float = 0.5):
        self.trees, self.interval = trees, interval
        self.peaks: list[float] = []
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    @staticmethod
    def pss(processes) -> float:
        total = 0
        for process in processes:
            try:
                total += process.memory_full_info().pss
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
        return total / 2**20

    def _loop(self):
        while not self.stopped.is_set():
            current = [self.pss(tree) for tree in self.trees()]
            self.peaks = [max(a, b) for a, b in zip(self.peaks, current)] if len(self.peaks) == len(current) else current
            self.stopped.wait(self.interval)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stopped.set()
        self.thread.join()


def timed_runs(engine, settings, jobs, warmup, runs: int) -> list[float]:
    """Photos/s of `runs` passes over `jobs` (after one untimed pass over `warmup`)."""
    list(engine.run(settings, warmup))
    photos = sum(len(entries) for _, entries in jobs)
    rates = []
    for _ in range(runs):
        started = time.perf_counter()
        for _ in engine.run(settings, jobs):
            pass
        rates.append(photos / (time.perf_counter() - started))
    return rates


def measure_cluster(name: str, workers: int, settings, jobs, warmup, runs: int) -> dict:
    from argml.audit import engines

    with tempfile.TemporaryDirectory(prefix=f"argml-bench-{name}-") as folder:
        # the workers import this argml (and whatever the driver's PYTHONPATH adds, e.g. an engine installed apart)
        path = os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH", "")]))
        nodes = cluster.start(name, workers, folder, env={"PYTHONPATH": path})
        try:
            idle = [MemorySampler.pss(tree) for tree in nodes.worker_trees()]
            engine = engines.connect(name, nodes.address, threads=1)
            try:
                with MemorySampler(nodes.worker_trees) as sampler:
                    rates = timed_runs(engine, settings, jobs, warmup, runs)
            finally:
                engine.close()
        finally:
            cluster.stop(nodes)
    figures = {"photos_per_s": spread(rates), "startup_s": round(nodes.startup_s, 1),
               "idle_worker_mb": [round(v) for v in idle], "peak_worker_mb": [round(v) for v in sampler.peaks]}
    print(f"{name}, {workers} worker(s): {describe(figures['photos_per_s'], 'photos/s')}; start-up "
          f"{figures['startup_s']} s; per worker idle {figures['idle_worker_mb']} MiB, peak {figures['peak_worker_mb']} MiB")
    return figures


def run(args) -> dict:
    from argml.audit import run as audit_run  # first: it fixes the import order of torchvision and TensorFlow
    from argml.audit import engines

    folder = utkface_folder("audit")
    names = sorted(os.listdir(folder))[::37][: args.photos]
    entries = [str(folder / name) for name in names]
    options = audit_run.Options(paths=[], out="", model=args.model, params=args.params)  # in-process: every core
    choice = audit_run.choose_model(options.model, "auto", Path(tempfile.mkdtemp(prefix="argml-bench-model-")))
    settings = audit_run.settings_for(options, choice)
    jobs = [(index, entries[start:start + args.shard_size]) for index, start in
            enumerate(range(0, len(entries), args.shard_size))]
    warmup = jobs[:max(args.workers)]
    local = engines.LocalEngine()
    myself = psutil.Process()
    with MemorySampler(lambda: [[myself]]) as sampler:
        rates = timed_runs(local, settings, jobs, warmup[:1], args.runs)
    figures = {"photos": len(entries), "shard_size": args.shard_size, "backend": choice.backend,
               "model": choice.pinned, "cpus": os.cpu_count(),
               "in_process": {"photos_per_s": spread(rates), "peak_mb": round(sampler.peaks[0])}}
    print(f"in-process: {describe(figures['in_process']['photos_per_s'], 'photos/s')}; peak {figures['in_process']['peak_mb']} MiB")
    for name in args.engines:
        figures[name] = {"install_mb": installed_mb(ENGINE_PACKAGES[name])}
        if name == "spark":
            figures[name]["java_mb"] = java_mb()
        for count in args.workers:  # one runtime thread per single-CPU worker
            figures[name][f"workers_{count}"] = measure_cluster(name, count, dataclasses.replace(settings, threads=1),
                                                                jobs, warmup[:count], args.runs)
    return figures
