"""`python -m argml.audit.proof`: does the correction work? The table of raw vs corrected shares on skewed
collections drawn from the test split (faces the model never trained on).

For each scenario (the split's own make-up, 70 % Black, 70 % Other, 80 % aged 50 or more, 90 % women) and
size (500 and 2,000 faces), `--draws` collections are drawn from the test split: the scenario's group at its
share, the rest in the split's own proportions, with replacement (the test split holds ~170 "Other" faces,
fewer than 70 % of 2,000). Every method of argml.audit.quantify estimates every task's shares with a bootstrap
interval (`--rounds`, resampling the collection and the validation faces); the table gives, per scenario,
size, task and method, the mean absolute error of the shares (percentage points, averaged over classes and
draws) and the coverage of the intervals (how often a class's true share fell inside). Each task keeps the
method with the lowest error on the scenarios that skew that task's own make-up and on the split's own (what
an audit of that task is for); the summary also gives every method's error over all scenarios.

Test answers come from `--test FILE.npz` (python -m argml.audit.labelled MODEL_DIR data/tfrecords --split test)
or, through the whole audit path (detection, alignment, the audit's backend), from `--test-audit DIR` (an
`argml audit` of the test split's photos, labelled from `--split-table`; photos with exactly one face).
Writes OUT.json (every figure) and OUT.md (the table for docs/audit.md).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from argml.audit import answers, quantify
from argml.audit.quantify import Answers
from argml.core.card import ModelCard
from argml.core.errors import command
from argml.core.files import atomic_path, write_json
from argml.core.labels import RACES, TASKS

SCENARIOS = {  # name -> (task, skewed classes, their share) or None for the split's own make-up
    "split's own": None,
    "70 % Black": ("race", (RACES.index("Black"),), 0.7),
    "70 % Other": ("race", (RACES.index("Other"),), 0.7),
    "80 % aged 50+": ("age", (7, 8), 0.8),  # the bins 50-61 and 62+
    "90 % women": ("gender", (1,), 0.9),
}
SIZES = (500, 2000)


def draw(pool: dict[str, Answers], scenario, size: int, rng: np.random.Generator) -> np.ndarray:
    """Row indices of one collection of `size` faces drawn from the pool (see the module docstring)."""
    if scenario is None:
        return rng.integers(0, len(pool["race"]), size)
    task, classes, share = scenario
    inside = np.isin(pool[task].true, classes)
    chosen = int(round(share * size))
    return np.concatenate([rng.choice(np.flatnonzero(inside), chosen), rng.choice(np.flatnonzero(~inside), size - chosen)])


def evaluate_draw(pool: dict[str, Answers], validation: dict[str, Answers], rows: np.ndarray, rounds: int,
                  confidence: float, seed: int, methods: tuple[str, ...]) -> dict:
    """{task: {method: (mean absolute error, fraction of classes covered)}} for one collection."""
    outcome = {}
    for task in TASKS:
        collection = pool[task].take(rows)
        truth = np.bincount(collection.true, minlength=collection.classes) / len(rows)
        outcome[task] = {}
        for method in methods:
            found = quantify.shares(method, collection, validation[task] if method in quantify.CORRECTING else None,
                                    rounds, confidence, seed)
            covered = (found.low - 1e-12 <= truth) & (truth <= found.high + 1e-12)
            outcome[task][method] = (float(np.abs(found.point - truth).mean()), float(covered.mean()))
    return outcome


def run(pool: dict[str, Answers], validation: dict[str, Answers], draws: int = 100, sizes=SIZES,
        rounds: int = 200, confidence: float = 0.95, seed: int = 0, methods=quantify.METHODS) -> dict:
    rng = np.random.default_rng(seed)
    rows = []
    for name, scenario in SCENARIOS.items():
        for size in sizes:
            started = time.monotonic()
            per_draw = [evaluate_draw(pool, validation, draw(pool, scenario, size, rng), rounds, confidence,
                                      seed + number, methods) for number in range(draws)]
            for task in TASKS:
                for method in methods:
                    errors = [outcome[task][method][0] for outcome in per_draw]
                    covered = [outcome[task][method][1] for outcome in per_draw]
                    rows.append({"scenario": name, "size": size, "task": task, "method": method,
                                 "mae_points": round(100 * float(np.mean(errors)), 2),
                                 "mae_points_sd": round(100 * float(np.std(errors)), 2),
                                 "coverage": round(float(np.mean(covered)), 3)})
            print(f"proof: {name}, {size} faces, {draws} draws: {time.monotonic() - started:.0f} s", file=sys.stderr)
    summary = summarise(pd.DataFrame(rows), methods)
    return {"draws": draws, "sizes": list(sizes), "rounds": rounds, "confidence": confidence, "seed": seed,
            "pool_faces": len(pool["race"]), "validation_faces": len(validation["race"]),
            "scenarios": {name: list(value[1:]) if value else None for name, value in SCENARIOS.items()},
            "summary": summary, "chosen": {task: summary[task]["chosen"] for task in TASKS}, "table": rows}


def own_scenarios(task: str) -> list[str]:
    """The scenarios that skew `task`'s own make-up, and the split's own: what an audit of `task` is for."""
    return [name for name, scenario in SCENARIOS.items() if scenario is None or scenario[0] == task]


def summarise(table: pd.DataFrame, methods) -> dict:
    """Per task and method: mean error and coverage over the task's own scenarios and over all of them; the
    method chosen for the task is the one with the lowest error on its own scenarios."""
    summary = {}
    for task in TASKS:
        rows = table[table["task"] == task]
        own = rows[rows["scenario"].isin(own_scenarios(task))]
        figures = {method: {"mae_points_own": round(float(own.loc[own["method"] == method, "mae_points"].mean()), 2),
                            "coverage_own": round(float(own.loc[own["method"] == method, "coverage"].mean()), 3),
                            "mae_points_all": round(float(rows.loc[rows["method"] == method, "mae_points"].mean()), 2),
                            "coverage_all": round(float(rows.loc[rows["method"] == method, "coverage"].mean()), 3)}
                   for method in methods}
        summary[task] = {"methods": figures, "chosen": min(methods, key=lambda m: figures[m]["mae_points_own"])}
    return summary


def markdown(result: dict) -> str:
    """The summary per task, then every cell: mean absolute error in points (interval coverage)."""
    table = pd.DataFrame(result["table"])
    methods = list(result["summary"][TASKS[0]]["methods"])
    header = "|---|---|" + "---:|" * len(methods)
    lines = ["| task | scenarios | " + " | ".join(methods) + " |", header]
    for task in TASKS:
        figures = result["summary"][task]["methods"]
        for kind, label in (("own", "its own skews + the split's"), ("all", "all")):
            cells = [f"{figures[m][f'mae_points_{kind}']:.2f} ({100 * figures[m][f'coverage_{kind}']:.0f} %)" for m in methods]
            cells = [f"**{cell}**" if m == result["chosen"][task] and kind == "own" else cell for m, cell in zip(methods, cells)]
            lines.append(f"| {task} | {label} | " + " | ".join(cells) + " |")
    lines += ["", "| scenario | faces | task | " + " | ".join(methods) + " |", "|---|---:|---|" + "---:|" * len(methods)]
    for (scenario, size, task), group in table.groupby(["scenario", "size", "task"], sort=False):
        cells = {row.method: f"{row.mae_points:.1f} ({100 * row.coverage:.0f} %)" for row in group.itertuples()}
        lines.append(f"| {scenario} | {size} | {task} | " + " | ".join(cells[m] for m in methods) + " |")
    return "\n".join(lines) + "\n"


def audited_pool(folder: str | Path, split_table: str | Path, card: ModelCard) -> dict[str, Answers]:
    """The test split's faces as an audit answered them (photos with exactly one face), with their labels."""
    from argml.data import utkface

    folder = Path(folder)
    faces, photos = pd.read_parquet(folder / "faces.parquet"), pd.read_parquet(folder / "photos.parquet")
    single = set(photos.loc[photos["faces"] == 1, "file"])
    faces = faces[faces["file"].isin(single)].copy()
    faces["name"] = faces["file"].map(lambda path: Path(path).name)
    labels = utkface.load_table(split_table)
    labels = labels[labels["split"] == "test"].drop_duplicates("file").set_index("file")
    faces = faces[faces["name"].isin(labels.index)]
    probabilities = {task: np.array(faces[f"{task}_probabilities"].tolist()) for task in TASKS}
    true = {"gender": labels.loc[faces["name"], "gender"].to_numpy(), "race": labels.loc[faces["name"], "race"].to_numpy(),
            "age": labels.loc[faces["name"], "age_bin"].to_numpy()}
    return answers.from_probabilities(probabilities, card, true)


def _card_and_validation(model: str, validation: str | None, download: Path):
    if model.startswith("models:/"):
        from argml.serving import pyfunc

        download.mkdir(parents=True, exist_ok=True)
        card = ModelCard.load(pyfunc.artifact_file(model, "description", download))
        return card, Path(validation) if validation else pyfunc.artifact_file(model, "validation", download)
    card = ModelCard.load(model)
    folder = Path(model) if Path(model).is_dir() else Path(model).parent
    return card, Path(validation) if validation else folder / answers.VALIDATION_FILE


@command("audit.proof")
def main(argv: list[str] | None = None, prog: str = "python -m argml.audit.proof") -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a model folder (model.json, validation.npz) or models:/ URI")
    parser.add_argument("--validation", help="the model's validation answers, when not beside it")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--test", help="the model's answers on the test split (.npz, python -m argml.audit.labelled)")
    source.add_argument("--test-audit", help="an `argml audit` folder of the test split's photos")
    parser.add_argument("--split-table", default="reports/split.csv.gz", help="labels for --test-audit")
    parser.add_argument("--out", default="reports/audit/correction.json", help="OUT.json; OUT.md beside it")
    parser.add_argument("--draws", type=int, default=100, help="collections per scenario and size")
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--rounds", type=int, default=200, help="bootstrap rounds per collection")
    parser.add_argument("--confidence", type=float, default=0.95)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--methods", nargs="+", choices=quantify.METHODS, default=list(quantify.METHODS))
    args = parser.parse_args(argv)
    out = Path(args.out)
    card, validation_path = _card_and_validation(args.model, args.validation, out.parent / "model")
    validation = answers.load_labelled(validation_path, card)
    pool = (answers.load_labelled(args.test, card) if args.test else audited_pool(args.test_audit, args.split_table, card))
    result = run(pool, validation, args.draws, tuple(args.sizes), args.rounds, args.confidence, args.seed,
                 tuple(args.methods))
    result["model"] = args.model
    result["test_source"] = args.test or f"audit {args.test_audit}"
    write_json(out, result)
    with atomic_path(out.with_suffix(".md")) as staging:
        staging.write_text(markdown(result))
    print(markdown(result))
    print(f"audit.proof: chosen per task {result['chosen']} ({len(result['table'])} cells) -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
