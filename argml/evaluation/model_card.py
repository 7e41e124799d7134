"""The model card of each age mode: intended use, data and its license, test metrics overall and per group with
intervals, the groups it fails most, and what it must not be used for (after Mitchell et al., "Model Cards for
Model Reporting", 2019).

Reads what `evaluate` wrote for a mode (reports/<mode>/metrics.json, per_group.csv, predictions.csv and the
training's validation.json) and reports/data.json; renders Markdown. `argml docs` writes it as the docs page
docs/model-card-<mode>.md, and the evaluate stage logs it beside the registered model version
(argml.tracking.cards). Not to be confused with argml.core.card: model.json, what a model's answers depend on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from argml.core import markdown
from argml.core.config import EvaluateParams
from argml.core.labels import AGE_BIN_NAMES, TASKS, AgeMode

# The figures a reader compares first: (metric, name, higher is better).
HEADLINE = (("gender.accuracy", "gender accuracy", True), ("race.accuracy", "race accuracy", True),
            ("age.bin_accuracy", "9-bin age accuracy", True), ("age.mae", "age MAE (years)", False),
            ("age.cs5", "age within 5 years (CS@5)", True), ("age.exact_accuracy", "exact-age accuracy", True))
GROUP_METRICS = ("gender.accuracy", "race.accuracy", "age.bin_accuracy", "age.mae")
GROUPINGS = {"race": "race", "gender": "gender", "age_bin": "age (9 bins)", "race_x_gender": "race × gender"}
NAMES = {metric: name for metric, name, _ in HEADLINE}
HIGHER_IS_BETTER = {metric: higher for metric, _, higher in HEADLINE}

LICENSE = ("UTKFace is available for **non-commercial research purposes only**; the copyright of its images "
           "belongs to their original owners. Do not redistribute it, or use it or a model trained on it, "
           "commercially.")
LABELS = ("UTKFace's race (five coarse categories: White, Black, Asian, Indian, Other) and gender (binary) labels "
          "were assigned by annotators from appearance; they are not anyone's identity. Age labels are noisy.")
MUST_NOT = ("Any decision about a person: hiring, credit, housing, insurance, policing, immigration, access to "
            "services, age verification or content gating; surveillance, tracking or profiling people who have "
            "not agreed to it; inferring anyone's self-identified race, ethnicity or gender.")
INTENDED = ("Research and teaching: studying face-attribute classifiers, their errors and their biases, on data "
            "whose license allows it, with the per-group results below read beside every overall figure.")


def format_value(metric: str, value: float) -> str:
    return markdown.number(value) if metric == "age.mae" else markdown.percent(value)


def format_interval(metric: str, low: float, high: float) -> str:
    return markdown.interval(low, high, 1, 2) if metric == "age.mae" else markdown.interval(low, high)


def bootstrap_intervals(rows: pd.DataFrame, rounds: int, level: float, seed: int = 0) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap intervals of the headline metrics over the test faces (as per_group.csv's are per
    group): `rounds` resamples of the rows with replacement."""
    if rounds == 0:
        return {}
    error = (rows["expected_age"] - rows["age_years"]).abs().to_numpy()
    outcomes = {f"{task}.accuracy": (rows[f"{task}_true"] == rows[f"{task}_pred"]).to_numpy() for task in TASKS}
    outcomes.update({"age.bin_accuracy": (rows["age_bin_true"] == rows["age_bin_pred"]).to_numpy(),
                     "age.exact_accuracy": (rows["age_class_true"] == rows["age_class_pred"]).to_numpy(),
                     "age.mae": error, "age.cs5": error <= 5})
    draws = np.random.default_rng(seed).integers(0, len(rows), (rounds, len(rows)))
    tail = (1 - level) / 2
    return {metric: (float(np.quantile(values[draws].mean(axis=1), tail)),
                     float(np.quantile(values[draws].mean(axis=1), 1 - tail)))
            for metric, values in outcomes.items()}


@dataclass(frozen=True)
class Evaluation:
    """One mode's test results as `evaluate` wrote them, with the overall bootstrap intervals."""

    mode: AgeMode
    metrics: dict[str, float]  # metrics.json, flat: "gender.accuracy" -> 0.9406
    intervals: dict[str, tuple[float, float]]
    groups: pd.DataFrame  # per_group.csv
    test_faces: int
    readout: dict | None  # validation.json's age read-out, chosen on the validation split
    rounds: int
    level: float

    @classmethod
    def load(cls, report_dir: str | Path, mode: str, evaluate: EvaluateParams) -> Evaluation:
        report_dir = Path(report_dir)
        document = json.loads((report_dir / "metrics.json").read_text())
        flat = {f"{task}.{name}": value for task in TASKS for name, value in document.get(task, {}).items()}
        rows = pd.read_csv(report_dir / "predictions.csv")
        validation = report_dir / "validation.json"
        readout = json.loads(validation.read_text()).get("readout") if validation.exists() else None
        return cls(AgeMode.of(mode), flat,
                   bootstrap_intervals(rows, evaluate.bootstrap_rounds, evaluate.confidence),
                   pd.read_csv(report_dir / "per_group.csv"), len(rows), readout, evaluate.bootstrap_rounds,
                   evaluate.confidence)

    def cell(self, metric: str) -> str:
        """'94.1 % [93.1, 95.0]'."""
        low, high = self.intervals.get(metric, (None, None))
        return f"{format_value(metric, self.metrics[metric])} {format_interval(metric, low, high)}".strip()

    def method(self) -> str:
        """How the figures were measured, in one sentence."""
        interval = (f"; in brackets the {100 * self.level:g} % percentile bootstrap interval ({self.rounds} "
                    "resamples of the faces)") if self.rounds else ""
        return f"Test split, {markdown.count(self.test_faces)} faces not used in training{interval}."

    def group_table(self, grouping: str) -> str:
        part = self.groups[self.groups["grouping"] == grouping]
        if grouping == "age_bin":  # youngest first, not in the file's alphabetical order
            part = part.sort_values("group", key=lambda names: names.map(AGE_BIN_NAMES.index), kind="stable")
        rows = []
        for group, members in part.groupby("group", sort=False):
            by_metric = members.set_index("metric")
            cells = [f"{format_value(m, by_metric.at[m, 'value'])} "
                     f"{format_interval(m, by_metric.at[m, 'ci_low'], by_metric.at[m, 'ci_high'])}".strip()
                     for m in GROUP_METRICS]
            rows.append([group, markdown.count(members["count"].iloc[0]), *cells])
        return markdown.table([GROUPINGS.get(grouping, grouping), "faces", *(NAMES[m] for m in GROUP_METRICS)], rows)

    def failure_groups(self) -> list[dict]:
        """Groups whose whole interval lies on the wrong side of the overall figure, worst first per metric."""
        found = []
        for metric in GROUP_METRICS:
            part = self.groups[(self.groups["metric"] == metric) & (self.groups["grouping"] != "race_x_gender")]
            overall = self.metrics[metric]
            worse = part[part["ci_high"] < overall] if HIGHER_IS_BETTER[metric] else part[part["ci_low"] > overall]
            worse = worse.sort_values("value", ascending=HIGHER_IS_BETTER[metric])
            found += [{"metric": metric, "grouping": row.grouping, "group": row.group, "faces": int(row.count),
                       "value": row.value, "ci_low": row.ci_low, "ci_high": row.ci_high, "overall": overall}
                      for row in worse.itertuples()]
        return found

    def failure_table(self) -> str:
        rows = [[NAMES[f["metric"]], f"{GROUPINGS[f['grouping']]}: {f['group']}", markdown.count(f["faces"]),
                 f"{format_value(f['metric'], f['value'])} {format_interval(f['metric'], f['ci_low'], f['ci_high'])}",
                 format_value(f["metric"], f["overall"])] for f in self.failure_groups()]
        if not rows:
            return "No group's interval lies below the overall figure."
        return markdown.table(["metric", "group", "faces", "group's figure [interval]", "all test faces"], rows)


def results_table(evaluations: dict[str, Evaluation]) -> str:
    """Both modes' headline test metrics with intervals, one row per mode."""
    header = ["mode", *(name for _, name, _ in HEADLINE)]
    rows = [[f"`{name}`", *(evaluation.cell(metric) for metric, _, _ in HEADLINE)]
            for name, evaluation in evaluations.items()]
    return markdown.table(header, rows)


def _data_section(data: dict | None) -> str:
    if not data:
        return "UTKFace's aligned and cropped faces (200×200)."
    split = data.get("per_split", {})
    sizes = " / ".join(markdown.count(split[name]["images"]) for name in ("train", "val", "test") if name in split)
    duplicates = data.get("duplicates", {})
    return (f"UTKFace's aligned and cropped faces: {markdown.count(data['images_seen'])} files, "
            f"{markdown.count(data['total'])} unique faces after removing byte-identical copies "
            f"({markdown.count(duplicates.get('removed_total', 0))} images, label-conflicting groups entirely), split "
            f"train / validation / test {sizes}, stratified by gender × race × age bin.")


def _readout_line(evaluation: Evaluation) -> str:
    if not evaluation.readout:
        return ""
    return (f" The age read-out, chosen on the validation split: 9-bin label from `{evaluation.readout['bins']}`, "
            f"years from the `{evaluation.readout['years']}` of the age distribution.")


def render(evaluation: Evaluation, data: dict | None, model_name: str) -> str:
    mode = evaluation.mode
    classes = "nine age bins" if mode.binned else f"{len(mode.classes)} age classes (one per year, the last open-ended)"
    sections = [
        f"# Model card: `{model_name}`, {mode.name} age mode",
        "<!-- Written by `argml docs` (argml.evaluation.model_card) from reports/; do not edit by hand. -->",
        "## Model\n\n"
        f"FaceNet (Inception-ResNet-v1, pretrained on CASIA-WebFace) with one head per task: gender (2 classes), "
        f"race (5 classes) and age ({classes}); the heads and FaceNet's top blocks are trained on UTKFace "
        f"(`features.from_block` in params.yaml says from where). Input: one aligned RGB face, 160×160. Registered in MLflow as `{model_name}` with the alias `{mode.name}`; this card is logged "
        f"beside each registered version.{_readout_line(evaluation)}",
        f"## Intended use\n\n{INTENDED}",
        f"## Must not be used for\n\n{MUST_NOT}",
        f"## Data and its license\n\n{_data_section(data)}\n\n{LICENSE}\n\n{LABELS}",
        f"## Test metrics\n\n{evaluation.method()}\n\n{results_table({mode.name: evaluation})}",
        "## Known failure groups\n\nGroups (by race, gender and age bin) whose interval lies wholly on the "
        f"worse side of the figure for all test faces; race × gender is in the tables below:\n\n{evaluation.failure_table()}",
        "## Per group\n\n" + "\n\n".join(evaluation.group_table(grouping) for grouping in GROUPINGS
                                         if (evaluation.groups["grouping"] == grouping).any()),
    ]
    return "\n\n".join(sections) + "\n"


def summary(evaluation: Evaluation, model_name: str) -> str:
    """A few lines for the registered version's description (MLflow keeps at most 5,000 characters)."""
    figures = ", ".join(f"{NAMES[metric]} {evaluation.cell(metric)}" for metric in GROUP_METRICS)
    worst = "; ".join(f"{NAMES[f['metric']]} {format_value(f['metric'], f['value'])} for {f['group']}"
                      for f in evaluation.failure_groups()[:4])
    return (f"{model_name}, {evaluation.mode.name} age mode. {evaluation.method()} {figures}. "
            f"Weakest groups: {worst or 'none below the overall intervals'}. For research and teaching only "
            f"(UTKFace: non-commercial research only); never for decisions about people. "
            f"The full model card is model_card.md beside this version's model files.")


def from_reports(report_dir: str | Path, mode: str, evaluate: EvaluateParams, model_name: str) -> tuple[str, str]:
    """(card, summary) of the mode whose reports are in `report_dir`; reports/data.json is its sibling."""
    evaluation = Evaluation.load(report_dir, mode, evaluate)
    data_file = Path(report_dir).parent / "data.json"
    data = json.loads(data_file.read_text()) if data_file.exists() else None
    return render(evaluation, data, model_name), summary(evaluation, model_name)
