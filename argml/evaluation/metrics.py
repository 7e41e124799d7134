"""Test-set evaluation of a trained model: per task, per class and per group, with bootstrap intervals.

Metrics (names shared by both age modes, so runs compare side by side):
- gender, race, age: accuracy and macro-F1 over the mode's classes; per-class precision/recall/F1.
- age, both modes: bin_accuracy (9 bins), mae and cs5 (share within 5 years) of the age in years, both under
  the model's read-out (argml.age), and exact_accuracy (exact mode: the arg-max class; binned mode: the exact
  class of the rounded age in years).
- per group (race, gender, race x gender, age bin): every per-row metric with its count and a bootstrap
  confidence interval; per grouping, the gap between the best and worst group and which group is worst.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from argml.core.card import ModelCard
from argml.core.files import atomic_path
from argml.core.labels import AGE_BIN_NAMES, GENDERS, RACES, TASKS
from argml.model.age import answer_readout
from argml.model.answers import predicted_classes

GROUPINGS = ("race", "gender", "race_x_gender", "age_bin")
# What evaluate writes beside predictions.csv (and logs to the run's `evaluation` folder).
REPORT_FILES = ("metrics.json", "per_class.csv", "per_group.csv", "fairness.csv",
                *(f"confusion_{task}.png" for task in ("age", "gender", "race")))
LOWER_IS_BETTER = {"age.mae"}


def predict(model, dataset) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(probabilities per task, labels) over a tf.data dataset built `with_meta`."""
    probabilities: dict[str, list] = {}
    labels: dict[str, list] = {}
    for images, targets in dataset.as_numpy_iterator():
        for task, values in model.predict_on_batch(images).items():
            probabilities.setdefault(task, []).append(np.asarray(values))
        for key, values in targets.items():
            labels.setdefault(key, []).append(values)
    return ({key: np.concatenate(value) for key, value in probabilities.items()},
            {key: np.concatenate(value) for key, value in labels.items()})


def row_outcomes(probabilities: dict[str, np.ndarray], labels: dict[str, np.ndarray],
                 card: ModelCard) -> pd.DataFrame:
    """One row per test face: what was predicted and whether it was right, plus its group columns. The age
    bin and years follow the model's read-out (card.readout, see argml.model.age)."""
    predicted = predicted_classes(probabilities, card)
    predicted_bin, expected_age = answer_readout(probabilities["age"], card.mode, card.age_values, card.readout)
    predicted_exact = card.mode.exact_classes(predicted["age"], expected_age)
    frame = pd.DataFrame({
        "file": [name.decode() if isinstance(name, bytes) else name for name in labels["file"]],
        "age_years": labels["age_years"], "expected_age": expected_age,
        "gender_true": labels["gender"], "gender_pred": predicted["gender"],
        "race_true": labels["race"], "race_pred": predicted["race"],
        "age_true": labels["age"], "age_pred": predicted["age"],
        "age_bin_true": labels["age_bin"], "age_bin_pred": predicted_bin,
        "age_class_true": labels["age_class"], "age_class_pred": predicted_exact,
    })
    frame["race"] = frame["race_true"].map(lambda r: RACES[r])
    frame["gender"] = frame["gender_true"].map(lambda g: GENDERS[g])
    frame["race_x_gender"] = frame["race"] + " " + frame["gender"]
    frame["age_bin"] = frame["age_bin_true"].map(lambda b: AGE_BIN_NAMES[b])
    return frame


def cached_split_metrics(probabilities: dict[str, np.ndarray], labels: dict[str, np.ndarray],
                         card: ModelCard) -> dict[str, float]:
    """The headline metrics of answers on a split of the feature cache (its labels as features.load_split
    gives them), computed as on the test split."""
    rows = row_outcomes(probabilities, {**labels, "file": labels["file_name"], "age": labels[card.mode.label_column]},
                        card)
    return summary_metrics(rows)


def macro_f1(truth: np.ndarray, guess: np.ndarray) -> float:
    """sklearn's f1_score(average="macro", zero_division=0): the mean over the classes present in either array
    of 2·TP / (true count + predicted count). Written out because the bootstrap calls it some 15,000 times per
    model, where sklearn's input checks took most of the evaluate stage's time."""
    classes = np.union1d(truth, guess)
    true_index, guess_index = np.searchsorted(classes, truth), np.searchsorted(classes, guess)
    hits = np.bincount(true_index[true_index == guess_index], minlength=len(classes))
    counts = np.bincount(true_index, minlength=len(classes)) + np.bincount(guess_index, minlength=len(classes))
    return float(np.mean(2 * hits / counts))


def summary_metrics(rows: pd.DataFrame) -> dict[str, float]:
    """The headline metrics of a set of rows (the whole test set, or one group)."""
    metrics = {}
    for task in TASKS:
        truth, guess = rows[f"{task}_true"], rows[f"{task}_pred"]
        metrics[f"{task}.accuracy"] = float((truth == guess).mean())
        metrics[f"{task}.macro_f1"] = macro_f1(truth.to_numpy(), guess.to_numpy())
    error = (rows["expected_age"] - rows["age_years"]).abs()
    metrics["age.bin_accuracy"] = float((rows["age_bin_true"] == rows["age_bin_pred"]).mean())
    metrics["age.exact_accuracy"] = float((rows["age_class_true"] == rows["age_class_pred"]).mean())
    metrics["age.mae"] = float(error.mean())
    metrics["age.cs5"] = float((error <= 5).mean())
    return metrics


def per_class(rows: pd.DataFrame, classes: dict[str, tuple[str, ...]]) -> pd.DataFrame:
    parts = []
    for task, names in classes.items():
        precision, recall, f1, support = precision_recall_fscore_support(
            rows[f"{task}_true"], rows[f"{task}_pred"], labels=range(len(names)), zero_division=0)
        parts.append(pd.DataFrame({"task": task, "class": names, "precision": precision, "recall": recall,
                                   "f1": f1, "support": support}))
    return pd.concat(parts, ignore_index=True)


def confusion(rows: pd.DataFrame, task: str, names: tuple[str, ...]) -> np.ndarray:
    return confusion_matrix(rows[f"{task}_true"], rows[f"{task}_pred"], labels=range(len(names)))


def _bootstrap(rows: pd.DataFrame, rounds: int, level: float, rng: np.random.Generator) -> dict[str, tuple]:
    if rounds == 0 or len(rows) < 2:
        return {}
    samples = [summary_metrics(rows.iloc[rng.integers(0, len(rows), len(rows))]) for _ in range(rounds)]
    frame = pd.DataFrame(samples)
    tail = (1 - level) / 2
    return {name: (float(frame[name].quantile(tail)), float(frame[name].quantile(1 - tail))) for name in frame}


def per_group(rows: pd.DataFrame, rounds: int = 200, level: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """Every headline metric per group of each grouping, with count and bootstrap interval."""
    rng = np.random.default_rng(seed)
    records = []
    for grouping in GROUPINGS:
        for group, members in rows.groupby(grouping, sort=True):
            intervals = _bootstrap(members, rounds, level, rng)
            for metric, value in summary_metrics(members).items():
                low, high = intervals.get(metric, (np.nan, np.nan))
                records.append({"grouping": grouping, "group": group, "count": len(members), "metric": metric,
                                "value": value, "ci_low": low, "ci_high": high})
    return pd.DataFrame(records)


def fairness(groups: pd.DataFrame) -> pd.DataFrame:
    """Per grouping and metric: the worst and best group and the gap between them."""
    records = []
    for (grouping, metric), part in groups.groupby(["grouping", "metric"], sort=False):
        lower_better = metric in LOWER_IS_BETTER
        worst = part.loc[part["value"].idxmax() if lower_better else part["value"].idxmin()]
        best = part.loc[part["value"].idxmin() if lower_better else part["value"].idxmax()]
        records.append({"grouping": grouping, "metric": metric, "gap": abs(best["value"] - worst["value"]),
                        "worst_group": worst["group"], "worst_value": worst["value"], "worst_count": worst["count"],
                        "best_group": best["group"], "best_value": best["value"]})
    return pd.DataFrame(records)


def metrics_document(overall: dict[str, float], gaps: pd.DataFrame) -> dict:
    """metrics.json: headline metrics, then per grouping the gap and worst group of each task's accuracy
    and of age MAE. The same dict feeds DVC (the file) and MLflow (its numeric leaves)."""
    document: dict = {}
    for name, value in overall.items():
        task, metric = name.split(".")
        document.setdefault(task, {})[metric] = round(value, 4)
    headline = ("gender.accuracy", "race.accuracy", "age.bin_accuracy", "age.mae")
    document["groups"] = {}
    for row in gaps[gaps["metric"].isin(headline)].itertuples():
        entry = document["groups"].setdefault(row.grouping, {})
        key = row.metric.replace(".", "_")
        entry[f"{key}_gap"] = round(float(row.gap), 4)
        entry[f"{key}_worst"] = str(row.worst_group)
    return document


def flatten_numeric(document: dict, prefix: str = "") -> dict[str, float]:
    flat = {}
    for key, value in document.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten_numeric(value, f"{name}."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            flat[name] = float(value)
    return flat


def save_confusion_png(matrix: np.ndarray, names: tuple[str, ...], title: str, path: str | Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay

    size = max(5, len(names) * 0.28)
    figure, axes = plt.subplots(figsize=(size + 1, size))
    display = ConfusionMatrixDisplay(matrix, display_labels=names)
    display.plot(ax=axes, include_values=len(names) <= 12, xticks_rotation="vertical", colorbar=True,
                 cmap="Blues")
    axes.set_title(title)
    figure.tight_layout()
    with atomic_path(path) as staging:
        figure.savefig(staging, format="png", dpi=110)
    plt.close(figure)


def write_reports(report_dir: str | Path, document: dict, rows: pd.DataFrame, groups: pd.DataFrame,
                  gaps: pd.DataFrame, card: ModelCard, title: str) -> None:
    """metrics.json, the per-class, per-group and fairness tables, every face's outcome (predictions.csv,
    DVC's confusion plots) and a confusion matrix per task, in `report_dir`."""
    from argml.core.files import write_json

    report_dir = Path(report_dir)
    write_json(report_dir / "metrics.json", document)
    tables = {"per_class.csv": per_class(rows, card.classes), "per_group.csv": groups, "fairness.csv": gaps,
              "predictions.csv": rows}
    for name, table in tables.items():  # each file whole or not at all, whenever the stage is stopped
        with atomic_path(report_dir / name) as staging:
            table.to_csv(staging, index=False)
    for task, names in card.classes.items():
        save_confusion_png(confusion(rows, task, names), names, f"{task} ({title}, test)",
                           report_dir / f"confusion_{task}.png")
