"""The committed reports as Markdown tables, each with a line on how its figures were measured.

Reads (under a reports folder): data.json, leakage.json, <mode>/export.json, demo.json, bench/*.json,
audit/correction.json and ablation.md or ablation.csv. Each function takes the parsed report and returns Markdown; argml.pipeline.docs
puts them into the docs. A benchmark file ({"benchmark", "date", "machine", "settings", "figures"},
argml.bench.report) renders whatever figures it holds: a figure with a spread (median, min, max, runs) shows
all of them.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from argml.core import markdown

# ---- data ------------------------------------------------------------------------------------------------


def data_facts(data: dict) -> str:
    duplicates = data["duplicates"]
    dropped = [entry for entry in data["malformed"] if not entry["recovered"]]
    split = data["per_split"]
    rows = [
        ["image files", markdown.count(data["images_seen"])],
        ["malformed names", f"{len(data['malformed'])} ({len(dropped)} dropped: "
                            f"{'; '.join(sorted({entry['reason'] for entry in dropped}))})"],
        ["groups of byte-identical images", f"{markdown.count(duplicates['duplicate_groups'])} "
                                            f"({markdown.count(duplicates['extra_copies'])} extra copies)"],
        ["of them with conflicting labels (dropped entirely)",
         f"{markdown.count(duplicates['conflicting_label_groups'])} groups, "
         f"{markdown.count(duplicates['dropped_for_conflicting_labels'])} images"],
        ["unique faces", markdown.count(data["total"])],
        ["sample (`data.limit`)", markdown.count(data["limit"]) if data.get("limit") else "none: every face"],
        ["train / validation / test", " / ".join(markdown.count(split[name]["images"])
                                                 for name in ("train", "val", "test"))],
    ]
    return (markdown.table(["", ""], rows) + "\n\nFrom `reports/data.json` (stage `labels`); the split is "
            "stratified by gender × race × age bin.")


def class_counts(data: dict) -> str:
    """Faces per class and split."""
    split = data["per_split"]
    rows = []
    for task in ("gender", "race", "age_bin"):
        for name in split["train"][task]:
            rows.append([task.replace("_", " "), name,
                         *(markdown.count(split[part][task].get(name, 0)) for part in ("train", "val", "test"))])
    return markdown.table(["label", "class", "train", "validation", "test"], rows)


# ---- leakage and protocols ---------------------------------------------------------------------------------

LEAKAGE_ROWS = (("all", "all"), ("without_twins", "without near-twins"), ("twins_only", "near-twins only"))


def _headline(figures: dict) -> str:
    return (f"{markdown.percent(figures['gender.accuracy'])} / {markdown.percent(figures['race.accuracy'])} / "
            f"{markdown.percent(figures['age.bin_accuracy'])}, {markdown.number(figures['age.mae'])}")


def leakage(report: dict) -> str:
    modes = list(report["metrics"])
    rows = []
    for key, name in LEAKAGE_ROWS:
        faces = report["metrics"][modes[0]][key]["faces"]
        share = f" ({markdown.percent(faces / report['test_faces'])})" if key == "twins_only" else ""
        rows.append([name, markdown.count(faces) + share,
                     *(_headline(report["metrics"][mode][key]) for mode in modes)])
    threshold = report["threshold"]
    per_race = ", ".join(f"{race} {markdown.percent(entry['near_twins'] / entry['faces'])}"
                         for race, entry in report["near_twins_per_race"].items())
    agreement = report["near_twin_label_agreement"]
    return (markdown.table(["test faces", "count", *(f"{mode}: gender / race / 9-bin age, MAE" for mode in modes)],
                           rows)
            + f"\n\nA test face is a *near-twin* when the FaceNet cosine to its nearest training face is at least "
            f"{threshold['cosine']:.4f}: the {markdown.percent(threshold['quantile'], 0)} quantile of the cosines "
            f"between {markdown.count(threshold['copies'])} training faces and their own augmented copies (median "
            f"{threshold['copy_cosine_percentiles']['p50']}). Near-twins per race: {per_race}. A near-twin and its "
            f"training neighbour share the gender {markdown.percent(agreement['gender'])}, the race "
            f"{markdown.percent(agreement['race'])} and the age bin {markdown.percent(agreement['age_bin'])} of the "
            f"time (age within 5 years: {markdown.percent(agreement['age_within_5_years'])}). From "
            f"`reports/leakage.json` (stage `leakage`).")


PROTOCOLS = (("published", "published (ours)"), ("duplicates", "(a) duplicates kept"),
             ("augment_first", "(b) augmentation before the split"), ("both", "(c) both"))


def protocols(report: dict) -> str:
    table = report["protocols"]
    rows = [[name, f"{markdown.count(table[key]['train'])} / {markdown.count(table[key]['test'])}",
             markdown.count(table[key]["leaked_test_faces"]), markdown.percent(table[key]["age_accuracy"]),
             markdown.percent(table[key]["gender_accuracy"]), markdown.percent(table[key]["race_accuracy"])]
            for key, name in PROTOCOLS if key in table]
    return (markdown.table(["protocol", "train / test rows", "test rows whose image, twin or source trains",
                            "9-bin age", "gender", "race"], rows)
            + f"\n\nEach protocol: an 80/10/10 split with the published split's seed and strata, and the same "
            f"model ({table['model']}), so only the split differs. (a) puts back "
            f"{markdown.count(table['byte_identical_copies'])} byte-identical copies and the "
            f"{markdown.count(table['label_conflicting_images'])} images of label-conflicting groups; (b) splits "
            f"the {markdown.count(table['augmented_copies'])} balancing copies independently of their sources. "
            "From `reports/leakage.json` (stage `leakage`, `argml.evaluation.protocols`).")


# ---- exports ---------------------------------------------------------------------------------------------

def exports(reports: dict[str, dict]) -> str:
    """The LiteRT exports against Keras on the test split, per mode ({mode: export.json})."""
    rows = []
    tolerance = None
    for mode, report in reports.items():
        tolerance = report.get("tolerance", tolerance)
        for runtime, entry in report.items():
            if not isinstance(entry, dict) or "delta" not in entry:
                continue
            delta, agreement = entry["delta"], entry.get("label_agreement", {})
            worst = entry.get("worst_group_delta", {})
            rows.append([mode, f"LiteRT {runtime}", f"{entry['size_mb']} MB" if "size_mb" in entry else "–",
                         " / ".join(f"{100 * delta[m]:+.2f}" for m in ("gender.accuracy", "race.accuracy",
                                                                          "age.bin_accuracy")) + " pt, "
                         f"{delta['age.mae']:+.3f} y",
                         " / ".join(markdown.percent(agreement[t]) for t in ("gender", "race", "age") if t in agreement),
                         f"{100 * max(v for k, v in worst.items() if k != 'age.mae'):.1f} pt" if worst else "–",
                         "yes" if entry.get("within_tolerance") else "no"]
                        )
    text = markdown.table(["mode", "runtime", "size", "gender / race / 9-bin age accuracy, MAE: change vs Keras",
                           "labels as Keras (gender / race / age)", "largest change in one group's accuracy",
                           "within tolerance"], rows)
    if tolerance:
        text += (f"\n\nOn the whole test split, against the Keras model (`reports/<mode>/export.json`, stage "
                 f"`export`). Tolerance: each accuracy at most {tolerance['accuracy_points']} point below Keras', "
                 f"the age MAE at most {tolerance['mae_years']} year above it; `--backend auto` runs an export "
                 "only when it is within tolerance.")
    return text


# ---- the demo --------------------------------------------------------------------------------------------

def demo(report: dict) -> str:
    rows = [[f"{person['true']['gender']}, {person['true']['race']}, {person['true']['age']}",
             f"{person['frames_labelled']} / {person['frames_in_view']}", len(person["tracks"]),
             *(markdown.percent(person[f"{task}_match"], 0) for task in ("gender", "race", "age"))]
            for person in report["per_person"]]
    counts = [f"{report[key]} {name}" for key, name in (("frames", "frames"), ("people", "people"), ("tracks", "tracks"),
                                                         ("pool_resets", "pool reset(s)"),
                                                         ("classified_faces", "faces classified")) if key in report]
    backend = f" on {report['backend']}" if "backend" in report else ""
    return (markdown.table(["person (true labels)", "frames labelled / in view", "tracks",
                            "pooled gender matched", "race", "9-bin age"], rows)
            + f"\n\n{', '.join(counts)}{backend}. From `reports/demo.json` (stage `demo`).")


# ---- benchmarks ------------------------------------------------------------------------------------------

SPREAD_KEYS = {"median", "min", "max", "runs"}


def _figures(figures: dict, prefix: str = "") -> list[list[str]]:
    """One row per figure: name, median (or value), min – max, runs, every run's value."""
    rows = []
    for key, value in figures.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and SPREAD_KEYS <= set(value):
            rows.append([name, str(value["median"]), f"{value['min']} – {value['max']}", str(value["runs"]),
                         ", ".join(map(str, value.get("values", [])))])
        elif isinstance(value, dict):
            rows += _figures(value, f"{name} / ")
        elif isinstance(value, list) and any(isinstance(item, (dict, list)) for item in value):
            continue  # raw per-run records: the file keeps them, their summaries are the rows
        elif isinstance(value, list):
            rows.append([name, ", ".join(map(str, value)), "", "", ""])
        else:
            rows.append([name, str(value), "", "", ""])
    return rows


def _machine(machine: dict) -> str:
    packages = ", ".join(f"{name} {version}" for name, version in machine.get("packages", {}).items())
    parts = [machine.get("cpu", "unknown CPU"), f"{machine.get('cores', '?')} cores",
             f"{machine['memory_gb']} GB memory" if machine.get("memory_gb") else None, machine.get("os"),
             f"Python {machine['python']}" if machine.get("python") else None, packages or None,
             f"commit {machine['git_commit']}" if machine.get("git_commit") else None]
    return "; ".join(part for part in parts if part)


def _settings(settings: dict) -> str:
    return " ".join(f"--{key.replace('_', '-')} {' '.join(map(str, value)) if isinstance(value, list) else value}"
                    for key, value in settings.items() if value not in (None, False, "", [])) or "(defaults)"


def benchmark(report: dict, summary: str | None = None) -> str:
    name = report["benchmark"]
    head = f"### `argml bench {name}`\n\n" + (f"{summary}. " if summary else "")
    return (head + f"Measured {report['date']} on {_machine(report.get('machine', {}))}. Settings: "
            f"`{_settings(report.get('settings', {}))}`. From `reports/bench/{name}.json`.\n\n"
            + markdown.table(["figure", "median (or value)", "min – max", "runs", "every run"],
                             _figures(report.get("figures", {}))))


def benchmarks(reports: list[dict], summaries: dict[str, str]) -> str:
    if not reports:
        return "No benchmark has been recorded yet: `argml bench NAME` writes `reports/bench/NAME.json`."
    return "\n\n".join(benchmark(report, summaries.get(report["benchmark"]))
                       for report in sorted(reports, key=lambda r: r["benchmark"]))


# ---- the ablation ----------------------------------------------------------------------------------------

def ablation(folder: Path) -> str:
    """reports/ablation.md as written, else reports/ablation.csv as a table."""
    if (folder / "ablation.md").exists():
        return (folder / "ablation.md").read_text().strip()
    if (folder / "ablation.csv").exists():
        frame = pd.read_csv(folder / "ablation.csv", dtype=str, keep_default_na=False)
        return markdown.table(list(frame.columns), frame.values.tolist()) + "\n\nFrom `reports/ablation.csv`."
    return "No ablation table in `reports/` yet."


# ---- params.yaml -----------------------------------------------------------------------------------------

def params_reference(text: str) -> str:
    """params.yaml as tables, one per section: each key (dotted below the section), its default and its comment.
    A comment on the lines after a key continues it; a section's own comment heads its table."""
    import re

    sections: list[tuple[str, str, list[list[str]]]] = []
    parents: list[str] = []
    for line in text.splitlines():
        section = re.match(r"^(\w+):\s*(?:#\s*(.*))?$", line)
        key = re.match(r"^( +)(\w+):\s*([^#]*?)\s*(?:#\s*(.*))?$", line)
        more = re.match(r"^\s+#\s*(.*)$", line)
        if section:
            sections.append((section[1], section[2] or "", []))
            parents = []
        elif more and sections and sections[-1][2]:
            sections[-1][2][-1][2] += " " + more[1].strip()
        elif key and sections:
            depth = len(key[1]) // 2 - 1
            parents = parents[:depth] + [key[2]]
            if key[3]:
                sections[-1][2].append([f"`{'.'.join(parents)}`", f"`{key[3]}`", (key[4] or "").strip()])
    parts = []
    for name, comment, rows in sections:
        parts.append(f"### `{name}`\n\n" + (f"{comment[0].upper()}{comment[1:]}.\n\n" if comment else "")
                     + markdown.table(["key", "default", "meaning"], rows))
    return "\n\n".join(parts)


# ---- audits ----------------------------------------------------------------------------------------------

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
            f"to every worker registered. {installs}. Measured {report['date']} on {_machine(report.get('machine', {}))}; "
            f"settings `{_settings(report.get('settings', {}))}`. From `reports/bench/audit.json` "
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
