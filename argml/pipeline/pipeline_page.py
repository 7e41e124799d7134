"""The tables of docs/pipeline.md, rendered by `argml docs` (argml.pipeline.docs, blocks of the same names):
- stages: one line per stage of dvc.yaml, what it reads and writes (code and params left out);
- stage-times: reports/bench/pipeline.json (`argml bench pipeline`): each stage's seconds per run, their sum,
  the total, CPU seconds, the load average and the headline test metrics;
- litert: reports/bench/litert.json (`argml bench litert`): faces/s per backend and batch size.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

CODE = ("argml/", "stages/", "data/params.checked", "params.yaml")


def _cells(paths: list[str]) -> str:
    return ", ".join(f"`{path}`" for path in paths) or "-"


def _path(entry) -> str:
    return (next(iter(entry)) if isinstance(entry, dict) else entry).replace("${item.mode}", "MODE")


def stages_table(dvc_yaml: Path) -> str:
    """| stage | reads | params | writes | from dvc.yaml, in its order; MODE stands for each age mode."""
    stages = yaml.safe_load(dvc_yaml.read_text())["stages"]
    lines = ["| stage | reads | params | writes |", "| --- | --- | --- | --- |"]
    for name, stage in stages.items():
        reads = [_path(dep) for dep in stage.get("deps", []) if not _path(dep).startswith(CODE)]
        writes = _cells([_path(out) for out in stage.get("outs", [])])
        metrics = [f"`{_path(out)}` (DVC metrics)" for out in stage.get("metrics", [])]
        label = f"{name}@MODE" if "matrix" in stage else name
        lines.append(f"| `{label}` | {_cells(reads)} | {', '.join(stage.get('params', [])) or '-'} | "
                     f"{', '.join([writes, *metrics])} |")
    return "\n".join(lines) + "\n"


def _machine(document: dict) -> str:
    machine = document.get("machine", {})
    return (f"Measured {document.get('date', '?')} on {machine.get('cpu', '?')}, {machine.get('cores', '?')} cores, "
            f"{machine.get('memory_gb', '?')} GB (`{document.get('benchmark')}` benchmark, "
            f"reports/bench/{document.get('benchmark')}.json).\n")


def stage_times_table(bench: Path) -> str:
    """Each run of `argml bench pipeline` as a column: seconds per stage, sum, total, CPU, load, test metrics."""
    if not bench.exists():
        return "Not measured yet: `argml bench pipeline` writes reports/bench/pipeline.json.\n"
    document = json.loads(bench.read_text())
    runs = document["figures"]["runs"]
    stages: list[str] = []
    for run in runs:
        stages += [name for name in run["stage_s"] if name not in stages]
    header = [f"`{run['commit'][:7]}` ({run['command']})" for run in runs]
    lines = ["| | " + " | ".join(header) + " |", "| --- |" + " --- |" * len(runs)]
    for name in stages:
        lines.append(f"| {name} | " + " | ".join(_seconds(run["stage_s"].get(name)) for run in runs) + " |")
    rows = {"sum of stages": "stage_sum_s", "total": "total_s", "CPU (all processes)": "cpu_s"}
    for label, key in rows.items():
        lines.append(f"| **{label}** | " + " | ".join(f"**{_seconds(run[key])}**" for run in runs) + " |")
    lines.append("| load average before / after | " + " | ".join(
        f"{run['load_average']['before']} / {run['load_average']['after']}" for run in runs) + " |")
    lines.append("| skipped (outputs up to date) | " + " | ".join(", ".join(run["skipped"]) or "-" for run in runs)
                 + " |")
    lines.append("| `git status` after | " + " | ".join(
        "clean" if not run["git_status"] else f"{len(run['git_status'])} changed" for run in runs) + " |")
    for mode in sorted({mode for run in runs for mode in run["test_metrics"]}):
        for metric in ("gender", "race", "age_bins", "age_mae", "age_cs5"):
            values = [run["test_metrics"].get(mode, {}).get(metric) for run in runs]
            lines.append(f"| test {metric} ({mode}) | " + " | ".join("-" if v is None else f"{v:g}" for v in values)
                         + " |")
    ratios = document["figures"]["comparison"]["stage_sum_ratio"]
    note = f"Sum of stages against the first run: {' / '.join(f'{r:g}' for r in ratios if r is not None)}. "
    if sources := document["figures"].get("merged_from"):
        dates = ", ".join(sorted({source["date"] for source in sources}))
        note += (f"The runs of {len(sources)} benchmark files of this machine ({dates}), run one after the other "
                 "and put side by side by `argml bench pipeline --merge`. ")
    return note + _machine(document) + "\n" + "\n".join(lines) + "\n"


def _seconds(value) -> str:
    if value is None:
        return "-"
    minutes, seconds = divmod(float(value), 60)
    return f"{int(minutes)} min {seconds:.0f} s" if minutes else f"{seconds:.0f} s"


def litert_table(bench: Path) -> str:
    if not bench.exists():
        return "Not measured yet: `argml bench litert` writes reports/bench/litert.json.\n"
    document = json.loads(bench.read_text())
    figures = document["figures"]
    sizes = sorted({size for rates in figures["faces_per_s"].values() for size in rates})
    lines = ["| backend | " + " | ".join(f"faces/s, {size.replace('_', ' ')}" for size in sizes) + " | size |",
             "| --- |" + " --- |" * (len(sizes) + 1)]
    for name, rates in figures["faces_per_s"].items():
        cells = [f"{rates[size]['median']:g} ({rates[size]['min']:g}-{rates[size]['max']:g})" for size in sizes]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {figures['size_mb'].get(name, '-')} MB |")
    return (f"The {figures['mode']} model, {figures['threads']} threads, median (min-max) of "
            f"{next(iter(next(iter(figures['faces_per_s'].values())).values()))['runs']} timings. "
            + _machine(document) + "\n" + "\n".join(lines) + "\n")
