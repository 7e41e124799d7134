"""`argml bench tracking`: the cost of team mode. In `--repo` (a pipeline checkout whose data stages have run,
e.g. with data.limit: 300), `dvc repro --force` of the stages that talk to MLflow (train, evaluate, champion)
against a fresh local SQLite store and against the team stack's server (`--stack`, started by
`make stack-up`), alternating, `--runs` times each."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from argml.bench.report import describe, spread

MLFLOW_STAGES = ("train@binned", "train@exact", "evaluate@binned", "evaluate@exact", "champion")


def add_arguments(parser) -> None:
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--repo", default=".", help="the pipeline checkout to rerun the stages in")
    parser.add_argument("--stack", default=".stack", help="the team stack's folder")


def run(args) -> dict:
    from argml.stack import engines as stack

    dvc = Path(sys.executable).with_name("dvc")
    seconds: dict[str, list[float]] = {"sqlite": [], "server": []}
    with tempfile.TemporaryDirectory() as scratch:
        stores = {"sqlite": {"MLFLOW_TRACKING_URI": f"sqlite:///{scratch}/mlflow.db"},
                  "server": stack.client_env(stack.read_state(args.stack))}
        for _ in range(args.runs):
            for name, settings in stores.items():
                start = time.perf_counter()
                subprocess.run([str(dvc), "repro", "--force", "--single-item", *MLFLOW_STAGES], cwd=args.repo,
                               env={**os.environ, **settings}, check=True, capture_output=True)
                seconds[name].append(time.perf_counter() - start)
                print(f"{name}: {seconds[name][-1]:.1f} s")
    figures = {name: {"seconds": spread(values)} for name, values in seconds.items()}
    for name, figure in figures.items():
        print(f"{' '.join(MLFLOW_STAGES)} with {name}: {describe(figure['seconds'], 's')}")
    extra = statistics.median(seconds["server"]) - statistics.median(seconds["sqlite"])
    figures["server_extra_s"] = round(extra, 1)
    print(f"server vs SQLite: {extra:+.1f} s ({extra / statistics.median(seconds['sqlite']):+.1%}) median")
    return figures
