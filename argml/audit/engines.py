"""Where the shards run: in this process (`local`, the default) or on a cluster of an existing engine.

Every engine runs the same per-shard function (argml.audit.worker.audit_shard) and yields each shard's
result to the driver as it finishes; the driver writes it (argml.audit.store), so workers need no shared
folder for the outputs, only the photos, the model store and argml itself.

- `local`: the shards one after another; the detector and classifier use every core.
- `dask`: a dask.distributed cluster (`dask scheduler`, `dask worker ADDRESS`); `--address tcp://HOST:PORT`.
  A worker that dies mid-shard (killed, out of memory) has its shard rescheduled on another worker by the
  scheduler (`distributed.scheduler.allowed-failures`, 3 by default); a shard that raises is retried
  `RETRIES` times.
- `ray`: a Ray cluster (`ray start --head`, `ray start --address`); `--address HOST:PORT`. A dead worker
  process's task is retried (`max_retries=RETRIES`).
- `spark`: a Spark standalone cluster (`spark://HOST:PORT`); one partition per shard, a failed task retried
  by Spark (`spark.task.maxFailures`).

At most `IN_FLIGHT_PER_WORKER` shards per worker are submitted at a time, so a 10-million-photo audit neither
ships its whole list at once nor holds every result in memory.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from argml.audit.worker import AuditSettings, ShardResult, audit_shard

ENGINES = ("local", "dask", "ray", "spark")
RETRIES = 3
IN_FLIGHT_PER_WORKER = 2
Job = tuple[int, list[str]]  # a shard's index and entries


class Engine(Protocol):
    name: str

    def workers(self) -> int: ...

    def run(self, settings: AuditSettings, jobs: list[Job]) -> Iterator[ShardResult]: ...

    def close(self) -> None: ...


class LocalEngine:
    """The shards in this process, one after another."""

    name = "local"

    def workers(self) -> int:
        return 1

    def run(self, settings: AuditSettings, jobs: list[Job]) -> Iterator[ShardResult]:
        for index, entries in jobs:
            yield audit_shard(settings, index, entries)

    def close(self) -> None:
        pass


class DaskEngine:
    name = "dask"

    def __init__(self, address: str):
        from distributed import Client

        self.client = Client(address, timeout=60)

    def workers(self) -> int:
        return max(1, len(self.client.scheduler_info(n_workers=-1)["workers"]))

    def run(self, settings: AuditSettings, jobs: list[Job]) -> Iterator[ShardResult]:
        from distributed import as_completed

        queue = list(jobs)

        def submit(job: Job):
            index, entries = job
            # pure=False: a shard is work to do, not a cached value; retries: a shard that raised
            return self.client.submit(audit_shard, settings, index, entries, pure=False, retries=RETRIES,
                                      key=f"audit-shard-{index}")

        window = IN_FLIGHT_PER_WORKER * self.workers()
        running = as_completed([submit(queue.pop(0)) for _ in range(min(window, len(queue)))])
        for future in running:
            result = future.result()
            future.release()
            if queue:
                running.add(submit(queue.pop(0)))
            yield result

    def close(self) -> None:
        self.client.close()


class RayEngine:
    name = "ray"

    def __init__(self, address: str, threads: int = 1):
        import ray

        ray.init(address=address, log_to_driver=False, logging_level="WARNING")
        self.ray = ray
        self.task = ray.remote(num_cpus=max(1, threads), max_retries=RETRIES)(audit_shard)

    def workers(self) -> int:
        return max(1, int(self.ray.cluster_resources().get("CPU", 1)))

    def run(self, settings: AuditSettings, jobs: list[Job]) -> Iterator[ShardResult]:
        queue = list(jobs)
        settings_ref = self.ray.put(settings)
        window = IN_FLIGHT_PER_WORKER * self.workers()
        running = []
        while queue or running:
            while queue and len(running) < window:
                index, entries = queue.pop(0)
                running.append(self.task.remote(settings_ref, index, entries))
            [finished], running = self.ray.wait(running, num_returns=1)
            yield self.ray.get(finished)

    def close(self) -> None:
        self.ray.shutdown()


class SparkEngine:
    name = "spark"

    def __init__(self, address: str):
        from pyspark.sql import SparkSession

        self.session = (SparkSession.builder.master(address).appName("argml-audit")
                        .config("spark.task.maxFailures", str(RETRIES + 1))
                        .config("spark.ui.enabled", "false").getOrCreate())

    def workers(self) -> int:
        return max(1, self.session.sparkContext.defaultParallelism)

    def run(self, settings: AuditSettings, jobs: list[Job]) -> Iterator[ShardResult]:
        if not jobs:
            return
        window = IN_FLIGHT_PER_WORKER * self.workers()
        context = self.session.sparkContext
        for start in range(0, len(jobs), window):
            batch = jobs[start:start + window]
            rdd = context.parallelize(batch, len(batch)).map(lambda job: audit_shard(settings, job[0], job[1]))
            yield from rdd.collect()

    def close(self) -> None:
        self.session.stop()


def connect(name: str, address: str | None = None, threads: int = 1) -> Engine:
    """The engine `name`, connected to the cluster at `address` (not needed for local)."""
    if name not in ENGINES:
        raise ValueError(f"unknown engine {name!r}; use one of {', '.join(ENGINES)}")
    if name == "local":
        return LocalEngine()
    if not address:
        raise ValueError(f"--engine {name} needs --address (the cluster's scheduler or head)")
    try:
        if name == "dask":
            return DaskEngine(address)
        if name == "ray":
            return RayEngine(address, threads)
        return SparkEngine(address)
    except ImportError as error:
        raise RuntimeError(f"--engine {name}: {error.name} is not installed (pip install 'argml[audit]')") from None
