"""`argml docs`: the docs' generated parts, written from the committed reports (or checked against them).

    argml docs             # rewrite them after the reports changed (e.g. after `dvc repro` or `argml bench`)
    argml docs --check     # write nothing; fail naming every file that disagrees with the reports

Reads params.yaml, dvc.yaml and reports/ (each mode's metrics.json, per_group.csv, predictions.csv,
validation.json and export.json; data.json, leakage.json, demo.json, demo.jsonl, demo.mp4, mlflow-compare.png,
bench/*.json, audit/correction.json, ablation.md or ablation.csv). Writes:
- in README.md and docs/**/*.md, the text between `<!-- argml docs: NAME [ARG] -->` and `<!-- /argml docs -->`,
  replaced by what block NAME renders (BLOCKS below); the prose around it is written by hand;
- docs/model-card-<mode>.md, each mode's model card (argml.evaluation.model_card);
- docs/images/demo-frame.png, the frame of reports/demo.mp4 with the most people labelled, and copies of the
  committed pictures the site shows (COPIES).
The test suite runs the check, so the docs cannot disagree with the committed reports.
"""

from __future__ import annotations

import argparse
import functools
import json
import re
import sys
from pathlib import Path

import numpy as np

from argml.core import markdown
from argml.core.config import load_params
from argml.core.errors import command
from argml.core.labels import AGE_MODES
from argml.evaluation import model_card
from argml.pipeline import audit_tables, pipeline_page, report_tables

MARKER = re.compile(r"(?P<open><!-- argml docs: (?P<spec>[^>]*?) -->\n)(?P<body>.*?)(?P<close><!-- /argml docs -->)",
                    re.S)
FRAME_FILE = "docs/images/demo-frame.png"
COPIES = {"reports/mlflow-compare.png": "docs/images/mlflow-compare.png"}  # committed pictures the site shows
FRAME_WIDTH = 640  # the demo clip's own width: the PNG stays about 160 KB


class Reports:
    """The committed reports of one repository, each read once."""

    def __init__(self, root: str | Path = "."):
        self.root = Path(root)
        self.folder = self.root / "reports"
        self.params = load_params(self.root / "params.yaml")

    def json(self, relative: str) -> dict:
        path = self.folder / relative
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing: run `dvc repro` (or `dvc pull`) first")
        return json.loads(path.read_text())

    def json_if_measured(self, relative: str) -> dict | None:
        """A report that exists only once someone ran its command (a benchmark); None before."""
        path = self.folder / relative
        return json.loads(path.read_text()) if path.exists() else None

    @functools.cache
    def evaluation(self, mode: str) -> model_card.Evaluation:
        return model_card.Evaluation.load(self.folder / mode, mode, self.params.evaluate)

    def evaluations(self) -> dict[str, model_card.Evaluation]:
        return {mode: self.evaluation(mode) for mode in AGE_MODES}

    def benches(self) -> list[dict]:
        return [json.loads(path.read_text()) for path in sorted((self.folder / "bench").glob("*.json"))]


# ---- blocks: NAME -> Markdown ----------------------------------------------------------------------------

def results(reports: Reports) -> str:
    evaluations = reports.evaluations()
    first = next(iter(evaluations.values()))
    return (model_card.results_table(evaluations) + f"\n\n{first.method()} From `reports/<mode>/metrics.json` "
            "(the figures) and `predictions.csv` (the intervals), written by the `evaluate` stage.")


def weakest_groups(reports: Reports) -> str:
    """Per headline metric of the champion mode, the weakest group by race, gender or age bin."""
    mode = reports.params.mlflow.champion
    evaluation = reports.evaluation(mode)
    rows = []
    for metric in model_card.GROUP_METRICS:
        part = evaluation.groups[(evaluation.groups["metric"] == metric)
                                 & (evaluation.groups["grouping"] != "race_x_gender")]
        worst = part.loc[part["value"].idxmax() if metric == "age.mae" else part["value"].idxmin()]
        rows.append([model_card.NAMES[metric], model_card.format_value(metric, evaluation.metrics[metric]),
                     f"{model_card.GROUPINGS[worst.grouping]}: {worst.group} ({worst['count']:,} faces)",
                     f"{model_card.format_value(metric, worst.value)} "
                     f"{model_card.format_interval(metric, worst.ci_low, worst.ci_high)}".strip()])
    return (markdown.table(["metric", "all test faces", "weakest group", "its figure [interval]"], rows)
            + f"\n\nThe `{mode}` model (the champion), test split; per group {100 * evaluation.level:g} % bootstrap "
            f"intervals from `reports/{mode}/per_group.csv`.")


def per_group(reports: Reports, mode: str, grouping: str | None = None) -> str:
    evaluation = reports.evaluation(mode)
    groupings = [grouping] if grouping else list(model_card.GROUPINGS)
    return "\n\n".join(evaluation.group_table(name) for name in groupings) + (
        f"\n\nTest split; {100 * evaluation.level:g} % bootstrap intervals ({evaluation.rounds} resamples per "
        f"group) from `reports/{mode}/per_group.csv`.")


def failure_groups(reports: Reports, mode: str) -> str:
    return reports.evaluation(mode).failure_table()


BLOCKS = {
    "results": results,
    "weakest-groups": weakest_groups,
    "per-group": per_group,  # per-group MODE [GROUPING]
    "failure-groups": failure_groups,  # failure-groups MODE
    "data": lambda reports: report_tables.data_facts(reports.json("data.json")),
    "class-counts": lambda reports: report_tables.class_counts(reports.json("data.json")),
    "leakage": lambda reports: report_tables.leakage(reports.json("leakage.json")),
    "protocols": lambda reports: report_tables.protocols(reports.json("leakage.json")),
    "exports": lambda reports: report_tables.exports({mode: reports.json(f"{mode}/export.json") for mode in AGE_MODES}),
    "demo": lambda reports: report_tables.demo(reports.json("demo.json")),
    "bench": lambda reports: report_tables.benchmarks(reports.benches(), _bench_summaries()),
    "audit-correction": lambda reports: audit_tables.audit_correction(reports.json("audit/correction.json")),
    "audit-throughput": lambda reports: audit_tables.audit_throughput(reports.json_if_measured("bench/audit.json")),
    "ablation": lambda reports: report_tables.ablation(reports.folder),
    "stages": lambda reports: pipeline_page.stages_table(reports.root / "dvc.yaml"),
    "stage-times": lambda reports: pipeline_page.stage_times_table(reports.folder / "bench" / "pipeline.json"),
    "litert": lambda reports: pipeline_page.litert_table(reports.folder / "bench" / "litert.json"),
    "params": lambda reports: report_tables.params_reference((reports.root / "params.yaml").read_text()),
}


def _bench_summaries() -> dict[str, str]:
    from argml.bench import BENCHMARKS
    return dict(BENCHMARKS)


def render_block(spec: str, reports: Reports) -> str:
    name, *args = spec.split()
    if name not in BLOCKS:
        raise ValueError(f"unknown docs block {name!r}; use one of {', '.join(BLOCKS)}")
    return BLOCKS[name](reports, *args)


FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def fill(text: str, reports: Reports) -> str:
    """`text` with every block's body replaced by what it renders now (markers inside code fences are examples)."""
    fences = [match.span() for match in FENCE.finditer(text)]

    def replace(match: re.Match) -> str:
        if any(start <= match.start() < end for start, end in fences):
            return match[0]
        body = render_block(match["spec"], reports).strip()
        return f"{match['open']}\n{body}\n\n{match['close']}"
    return MARKER.sub(replace, text)


# ---- the demo frame --------------------------------------------------------------------------------------

def demo_frame_index(jsonl: Path) -> int:
    """The middle one of the frames with the most labelled faces."""
    labelled = [sum(1 for face in json.loads(line)["faces"] if face["labels"])
                for line in jsonl.read_text().splitlines() if line.strip()]
    best = [index for index, count in enumerate(labelled) if count == max(labelled)]
    return best[len(best) // 2]


def demo_frame(folder: Path) -> np.ndarray:
    import cv2

    index = demo_frame_index(folder / "demo.jsonl")
    video = cv2.VideoCapture(str(folder / "demo.mp4"))
    try:
        for _ in range(index + 1):
            ok, frame = video.read()
            if not ok:
                raise ValueError(f"{folder / 'demo.mp4'} has no frame {index}")
    finally:
        video.release()
    height = round(frame.shape[0] * FRAME_WIDTH / frame.shape[1])
    return cv2.resize(frame, (FRAME_WIDTH, height), interpolation=cv2.INTER_AREA)


# ---- the files -------------------------------------------------------------------------------------------

def text_outputs(reports: Reports) -> dict[Path, str]:
    """Every generated text file's path -> its content now."""
    pages = [reports.root / "README.md", *sorted((reports.root / "docs").rglob("*.md"))]
    outputs = {}
    for mode in AGE_MODES:
        card, _ = model_card.from_reports(reports.folder / mode, mode, reports.params.evaluate,
                                          reports.params.mlflow.model_name)
        outputs[reports.root / "docs" / f"model-card-{mode}.md"] = card
    for page in pages:
        if page.exists() and page not in outputs:
            outputs[page] = fill(page.read_text(), reports)
    return outputs


def frame_is_stale(reports: Reports) -> bool:
    """Whether docs/images/demo-frame.png is not the frame reports/demo.mp4 gives (compared as pixels)."""
    from argml.core import images

    image = reports.root / FRAME_FILE
    current = images.read(image) if image.exists() else None
    return current is None or not np.array_equal(current, demo_frame(reports.folder))


def stale_copies(reports: Reports) -> list[tuple[Path, Path]]:
    pairs = [(reports.root / source, reports.root / target) for source, target in COPIES.items()]
    return [(source, target) for source, target in pairs
            if source.exists() and (not target.exists() or target.read_bytes() != source.read_bytes())]


def stale(reports: Reports) -> list[Path]:
    """The generated files that differ from what the reports give now."""
    found = [path for path, text in text_outputs(reports).items() if not path.exists() or path.read_text() != text]
    found += [target for _, target in stale_copies(reports)]
    return found + ([reports.root / FRAME_FILE] if frame_is_stale(reports) else [])


def write(reports: Reports) -> list[Path]:
    """Write every generated file that changed; -> those written."""
    import cv2

    written = []
    for path, text in text_outputs(reports).items():
        if not path.exists() or path.read_text() != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            written.append(path)
    for source, target in stale_copies(reports):
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(source.read_bytes())
        written.append(target)
    image = reports.root / FRAME_FILE
    if frame_is_stale(reports):
        image.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(image), demo_frame(reports.folder), [cv2.IMWRITE_PNG_COMPRESSION, 9])
        written.append(image)
    return written


@command("docs")
def main(argv: list[str] | None = None, prog: str = "argml docs") -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default=".", help="the repository (default: the current folder)")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if any generated part is stale")
    args = parser.parse_args(argv)
    reports = Reports(args.root)
    if args.check:
        found = stale(reports)
        for path in found:
            print(f"docs: {path} disagrees with the reports", file=sys.stderr)
        if found:
            print("docs: run `argml docs` and commit the result", file=sys.stderr)
        return 1 if found else 0
    written = write(reports)
    print(f"docs: {len(written)} file(s) written" + "".join(f"\n  {path}" for path in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
