"""The committed reports as Markdown tables, each with a line on how its figures were measured.

Reads (under a reports folder): data.json, leakage.json, <mode>/export.json, demo.json, bench/*.json and
ablation.md or ablation.csv; the audit's tables are in argml.pipeline.audit_tables. Each function takes the parsed
report and returns Markdown; argml.pipeline.docs puts them into the docs. A benchmark file ({"benchmark", "date",
"machine", "settings", "figures"}, argml.bench.report) renders whatever figures it holds: a figure with a spread
(median, min, max, runs) shows all of them.
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


def machine_line(machine: dict) -> str:
    packages = ", ".join(f"{name} {version}" for name, version in machine.get("packages", {}).items())
    parts = [machine.get("cpu", "unknown CPU"), f"{machine.get('cores', '?')} cores",
             f"{machine['memory_gb']} GB memory" if machine.get("memory_gb") else None, machine.get("os"),
             f"Python {machine['python']}" if machine.get("python") else None, packages or None,
             f"commit {machine['git_commit']}" if machine.get("git_commit") else None]
    return "; ".join(part for part in parts if part)


def settings_line(settings: dict) -> str:
    return " ".join(f"--{key.replace('_', '-')} {' '.join(map(str, value)) if isinstance(value, list) else value}"
                    for key, value in settings.items() if value not in (None, False, "", [])) or "(defaults)"


def benchmark(report: dict, summary: str | None = None) -> str:
    name = report["benchmark"]
    head = f"### `argml bench {name}`\n\n" + (f"{summary}. " if summary else "")
    return (head + f"Measured {report['date']} on {machine_line(report.get('machine', {}))}. Settings: "
            f"`{settings_line(report.get('settings', {}))}`. From `reports/bench/{name}.json`.\n\n"
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
