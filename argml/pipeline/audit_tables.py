"""The audit's two docs tables: how well each correction recovers a collection's make-up
(reports/audit/correction.json) and how fast an audit runs in-process and on a cluster (reports/bench/audit.json).
"""

from __future__ import annotations

from argml.core import markdown
from argml.pipeline.report_tables import machine_line, settings_line

AUDIT_TASKS = ("gender", "race", "age")


def _error(figures: dict, kind: str) -> str:
    """One method's mean absolute error in points with its interval coverage: '1.23 (96 %)'."""
    return f"{figures[f'mae_points_{kind}']:.2f} ({100 * figures[f'coverage_{kind}']:.0f} %)"


def audit_correction(result: dict) -> str:
    """reports/audit/correction.json (python -m argml.audit.proof): per task every method's error on the
    task's own skews and on all of them, the chosen method against raw counting, then every cell."""
    methods = list(result["summary"][AUDIT_TASKS[0]]["methods"])
    rows, verdicts = [], []
    for task in AUDIT_TASKS:
        figures, chosen = result["summary"][task]["methods"], result["chosen"][task]
        for kind, label in (("own", "its own skews and the split's"), ("all", "every scenario")):
            rows.append([task, label, *(f"**{_error(figures[m], kind)}**" if m == chosen and kind == "own"
                                        else _error(figures[m], kind) for m in methods)])
        raw, best = figures["cc"]["mae_points_own"], figures[chosen]["mae_points_own"]
        others = sorted((m for m in methods if m != chosen), key=lambda m: figures[m]["mae_points_own"])
        verdicts.append(f"- **{task}**: `{chosen}`, {best:.2f} points against raw counting's {raw:.2f} ("
                        + (f"{raw - best:.2f} points better" if best < raw else f"{best - raw:.2f} points worse")
                        + "); the others' errors are higher by " + ", ".join(
                            f"{figures[m]['mae_points_own'] - best:.2f} (`{m}`)" for m in others) + " points.")
    cells = {}
    for row in result["table"]:  # one line per scenario, size and task, in the order they were measured
        cells.setdefault((row["scenario"], row["size"], row["task"]), {})[row["method"]] = (
            f"{row['mae_points']:.1f} ({100 * row['coverage']:.0f} %)")
    sizes = " and ".join(markdown.count(size) for size in result["sizes"])
    return (markdown.table(["task", "scenarios", *(f"`{m}`" for m in methods)], rows)
            + "\n\nMean absolute error of the shares in percentage points (averaged over the classes, the draws "
            f"and the scenarios), with the coverage of the {100 * result['confidence']:g} % intervals in brackets; "
            "**bold**: the method each task keeps (the lowest error on the scenarios that skew that task's own "
            "make-up, and the split's own). Per task:\n\n" + "\n".join(verdicts)
            + f"\n\nEvery cell: {result['draws']} collections of {sizes} faces per scenario, drawn from "
            f"{markdown.count(result['pool_faces'])} test faces; corrections from "
            f"{markdown.count(result['validation_faces'])} validation faces; {result['rounds']} bootstrap rounds "
            f"per collection; seed {result['seed']}.\n\n"
            + markdown.table(["scenario", "faces", "task", *(f"`{m}`" for m in methods)],
                             [[scenario, markdown.count(size), task, *(found[m] for m in methods)]
                              for (scenario, size, task), found in cells.items()])
            + f"\n\nFrom `reports/audit/correction.json` (`python -m argml.audit.proof`, model `{result['model']}`).")


THROUGHPUT_COMMAND = "argml bench audit --photos 384 --shard-size 32 --runs 3 --engines dask --workers 1 2"
PHOTOS_AT_SCALE = 10_000_000


def _rate(figure: dict) -> str:
    runs = f"{figure['runs']} run{'s' if figure['runs'] != 1 else ''}"
    return f"{figure['median']} ({figure['min']} – {figure['max']}, {runs})"


def _mib(values) -> str:
    return ", ".join(f"{value:,}" for value in values) + " MiB"


def audit_throughput(report: dict | None) -> str:
    """reports/bench/audit.json (`argml bench audit`): photos/s in-process and per cluster size, memory per
    worker, start-up, and what that makes of 10 million photos; a one-line placeholder before it is measured."""
    if report is None:
        return (f"Not measured yet: run `{THROUGHPUT_COMMAND}` (it writes `reports/bench/audit.json`), then "
                "`argml docs`.")
    figures = report["figures"]
    local = figures["in_process"]
    rows = [[f"in-process ({figures['cpus']} CPUs)", _rate(local["photos_per_s"]), "–",
             f"{local['peak_mb']:,} MiB (the process)", "–"]]
    engines = {name: value for name, value in figures.items() if isinstance(value, dict) and "install_mb" in value}
    per_worker = []
    for name, engine in engines.items():
        for key, cluster in engine.items():
            if not key.startswith("workers_"):
                continue
            count = int(key.removeprefix("workers_"))
            rows.append([f"{name}, {count} worker{'s' if count > 1 else ''}", _rate(cluster["photos_per_s"]),
                         _mib(cluster["idle_worker_mb"]), _mib(cluster["peak_worker_mb"]), f"{cluster['startup_s']} s"])
            per_worker.append((cluster["photos_per_s"]["median"] / count, name, count))
    installs = "; ".join(f"{name} adds {engine['install_mb']} MB of packages" if engine["install_mb"] is not None
                         else f"{name} is not installed" for name, engine in engines.items())
    hours = PHOTOS_AT_SCALE / local["photos_per_s"]["median"] / 3600
    text = (markdown.table(["where", "photos/s: median (min – max, runs)", "memory per worker, idle",
                            "memory per worker, peak (PSS)", "cluster start-up"], rows)
            + f"\n\n{markdown.count(figures['photos'])} real UTKFace photos (whole 200x200 files, through detection, "
            f"alignment and the `{figures['backend']}` classifier of `{figures['model']}`) in shards of "
            f"{figures['shard_size']}; each worker is a single-CPU process tree; start-up is from the first command "
            f"to every worker registered. {installs}. Measured {report['date']} on {machine_line(report.get('machine', {}))}; "
            f"settings `{settings_line(report.get('settings', {}))}`. From `reports/bench/audit.json` "
            f"(`argml bench audit`).")
    text += (f"\n\nOn paper, assuming throughput grows with workers as measured here: "
             f"{markdown.count(PHOTOS_AT_SCALE)} photos take {hours:,.0f} hours in-process on this machine")
    if per_worker:
        rate, name, count = max(per_worker, key=lambda item: item[2])  # the largest cluster measured
        workers_for_a_day = PHOTOS_AT_SCALE / rate / (24 * 3600)
        text += (f"; at {rate:.2f} photos/s per single-CPU {name} worker (the {count}-worker figure), "
                 f"{PHOTOS_AT_SCALE / rate / 3600:,.0f} worker-hours, e.g. {workers_for_a_day:,.0f} such workers "
                 f"for 24 hours")
    return text + "."
