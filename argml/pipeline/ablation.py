"""`argml ablation run|table`: the model-quality ablation as DVC experiments, and the table made from them.

Each row of ROWS adds one training lever to the row above it, on the same feature cache; the last row is
params.yaml's defaults. `run` creates a row as `dvc exp run -n NAME -S ... train@binned` from the current
params.yaml (an MLflow run `NAME-binned` too) and then puts the workspace back as it was.
Experiments are git refs of the clone that ran them: `dvc exp push origin NAME` shares one, `dvc exp pull
origin NAME` fetches a teammate's (docs/pipeline.md). `table` reads every experiment `dvc exp show --json`
lists and writes reports/ablation.csv: per row the validation figures of reports/binned/validation.json (gender,
race, 9-bin age, MAE, CS@5, the read-out), the experiment's commit and the command that re-creates it; and the
same as a Markdown table, reports/ablation.md, which the docs include.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from argml.core.errors import command
from argml.core.files import atomic_path

MODE = "binned"
TABLE = Path("reports/ablation.csv")  # and reports/ablation.md beside it
COLUMNS = ("row", "name", "lever", "gender", "race", "age_bins", "mae", "cs5", "readout", "precision",
           "experiment", "command")


@dataclass(frozen=True)
class Row:
    name: str
    lever: str  # what this row adds to the one above
    settings: tuple[str, ...]  # -S values against today's params.yaml

    def arguments(self, mode: str = MODE) -> list[str]:
        return ["dvc", "exp", "run", "-n", self.name, *[part for setting in self.settings for part in ("-S", setting)],
                f"train@{mode}"]

    def command(self, mode: str = MODE) -> str:
        return shlex.join(self.arguments(mode))


_REPORT_HEADS = ("train.lr_factors.race=0.1", "train.lr_factors.gender=0.1")
ROWS = (
    Row("baseline", "before the quality work: constant rate 0.003, backbone x0.01, one-hot targets",
        ("train.finetune_schedule=constant", "train.warmup_epochs=0", "train.finetune_lr=0.003",
         "train.lr_factors.backbone=0.01", "train.age_sigma=0", "train.age_l1=0", "train.label_smoothing=0",
         *_REPORT_HEADS)),
    Row("cosine-schedule", "warm-up 0.3 epoch + cosine decay, rate 0.001, backbone x0.1",
        ("train.age_sigma=0", "train.age_l1=0", "train.label_smoothing=0", *_REPORT_HEADS,
         "train.lr_factors.backbone=0.1")),
    Row("age-distribution", "+ Gaussian age targets (sigma 2 years), L1 on the expected age x0.05",
        ("train.label_smoothing=0", *_REPORT_HEADS, "train.lr_factors.backbone=0.1")),
    Row("label-smoothing", "+ label smoothing 0.1 for race and gender", (*_REPORT_HEADS, "train.lr_factors.backbone=0.1")),
    Row("heads-full-rate", "+ race and gender heads at the base rate (the report: 1/10)", ("train.lr_factors.backbone=0.1",)),
    Row("backbone-0.3", "+ backbone x0.3 (was x0.1) = the defaults", ()),
)


def experiments(show: list[dict]) -> dict[str, dict]:
    """`dvc exp show --json` -> {experiment name: {"rev", "timestamp", "metrics": {file: data}, "params":
    params.yaml data}}; of experiments with the same name (on several commits), the newest."""
    found: dict[str, dict] = {}
    for baseline in show:
        for group in baseline.get("experiments") or []:
            for entry in group.get("revs", []):
                data = entry.get("data") or {}
                if not entry.get("name") or entry.get("error"):
                    continue
                if entry["name"] in found and found[entry["name"]]["timestamp"] > (data.get("timestamp") or ""):
                    continue
                found[entry["name"]] = {
                    "rev": entry["rev"], "timestamp": data.get("timestamp") or "",
                    "metrics": {path: value.get("data", {}) for path, value in (data.get("metrics") or {}).items()},
                    "params": ((data.get("params") or {}).get("params.yaml") or {}).get("data", {})}
    return found


def readout_text(readout: dict) -> str:
    """The chosen 9-bin read-out and its alternative's validation score, e.g. `argmax (expected 55.4 %)`."""
    scores = readout.get("scores", {}).get("bin_accuracy", {})
    others = [f"{name} {100 * value:.1f} %" for name, value in scores.items() if name != readout.get("bins")]
    return f"{readout.get('bins')}" + (f" ({', '.join(others)})" if others else "")


def table(found: dict[str, dict], mode: str = MODE) -> pd.DataFrame:
    """One row per ROWS entry that has an experiment, in ROWS order, with its validation figures."""
    rows = []
    for number, row in enumerate(ROWS, start=1):
        if row.name not in found:
            continue
        experiment = found[row.name]
        validation = experiment["metrics"].get(f"reports/{mode}/validation.json")
        if not validation:
            raise ValueError(f"experiment {row.name} has no reports/{mode}/validation.json: run {row.command(mode)}")
        figures = validation["metrics"]
        rows.append({"row": number, "name": row.name, "lever": row.lever,
                     "gender": figures["gender.accuracy"], "race": figures["race.accuracy"],
                     "age_bins": figures["age.bin_accuracy"], "mae": figures["age.mae"], "cs5": figures["age.cs5"],
                     "readout": readout_text(validation.get("readout", {})),
                     "precision": validation.get("precision", {}).get("train", "float32"),
                     "experiment": experiment["rev"][:7], "command": row.command(mode)})
    return pd.DataFrame(rows, columns=list(COLUMNS))


def markdown(frame: pd.DataFrame) -> str:
    """The table for people: percentages, and each row's command."""
    lines = ["| # | experiment: what it adds | gender | race | 9-bin age | MAE | CS@5 | read-out (bins) | re-create |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in frame.itertuples():
        lines.append(f"| {row.row} | `{row.name}`: {row.lever} | {100 * row.gender:.1f} % | {100 * row.race:.1f} % | "
                     f"{100 * row.age_bins:.1f} % | {row.mae:.2f} | {100 * row.cs5:.1f} % | {row.readout} | "
                     f"`{row.command}` |")
    return "\n".join(lines) + ("\n\nValidation split of the binned model (`reports/binned/validation.json` of each "
                               "experiment); written by `argml ablation table` from `dvc exp show`.\n")


def show_experiments(repo: Path) -> dict[str, dict]:
    result = subprocess.run(["dvc", "exp", "show", "--json", "--all-commits"], cwd=repo, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"dvc exp show failed: {result.stderr.strip()[-500:]}")
    return experiments(json.loads(result.stdout))


def write_table(repo: Path, out: Path, mode: str = MODE) -> pd.DataFrame:
    frame = table(show_experiments(repo), mode)
    if frame.empty:
        raise ValueError("no ablation experiment in this clone: `argml ablation run` creates them, "
                         "`dvc exp pull origin NAME` fetches a teammate's")
    with atomic_path(repo / out) as staging:
        frame.to_csv(staging, index=False)
    with atomic_path((repo / out).with_suffix(".md")) as staging:
        staging.write_text(markdown(frame))
    return frame


@contextlib.contextmanager
def workspace_kept(repo: Path):
    """`dvc exp run` leaves the last experiment's params.yaml, dvc.lock and reports in the workspace: put back
    the bytes that were there, and the cached outputs dvc.lock names (`dvc checkout`)."""
    paths = [repo / "params.yaml", repo / "dvc.lock", *(path for path in (repo / "reports").rglob("*") if path.is_file())]
    saved = {path: path.read_bytes() for path in paths if path.exists()}
    try:
        yield
    finally:
        for path, data in saved.items():
            path.write_bytes(data)
        subprocess.run(["dvc", "checkout", "--quiet"], cwd=repo, check=False)


def run_rows(repo: Path, names: list[str], mode: str = MODE) -> None:
    """`dvc exp run` each named row (all when none; an experiment of the same name is replaced), then put the
    workspace back as it was."""
    chosen = [row for row in ROWS if not names or row.name in names]
    unknown = set(names) - {row.name for row in ROWS}
    if unknown:
        raise ValueError(f"unknown ablation rows {sorted(unknown)}; rows: {', '.join(row.name for row in ROWS)}")
    existing = subprocess.run(["dvc", "exp", "list", "--name-only"], cwd=repo, capture_output=True, text=True,
                              check=True).stdout.split()
    with workspace_kept(repo):
        for row in chosen:
            if row.name in existing:  # `dvc exp run --force` would also rerun the stages upstream
                subprocess.run(["dvc", "exp", "remove", row.name], cwd=repo, check=True)
            print(f"ablation: {row.command(mode)}", flush=True)
            subprocess.run(row.arguments(mode), cwd=repo, check=True)


def parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", default=".", help="the DVC repository (default: here)")
    parser.add_argument("--mode", default=MODE, help="the age mode the rows train (default %(default)s)")
    sub = parser.add_subparsers(dest="action", required=True)
    run = sub.add_parser("run", help="create the rows' experiments (dvc exp run; about 5-10 minutes each here)")
    run.add_argument("names", nargs="*", help="rows to run (default: all)")
    show = sub.add_parser("table", help=f"write {TABLE} from the experiments dvc exp show lists")
    show.add_argument("--out", default=str(TABLE))
    sub.add_parser("commands", help="print each row's dvc exp run command")
    return parser


@command("ablation")
def main(argv: list[str] | None = None, prog: str = "argml ablation") -> int:
    args = parser(prog).parse_args(argv)
    repo = Path(args.repo)
    if args.action == "commands":
        for row in ROWS:
            print(row.command(args.mode))
    elif args.action == "run":
        run_rows(repo, args.names, args.mode)
    else:
        frame = write_table(repo, Path(args.out), args.mode)
        print(f"ablation: wrote {args.out} and its .md ({len(frame)} rows: {', '.join(frame['name'])})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
