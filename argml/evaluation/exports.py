"""How close a model's LiteRT exports answer to the Keras model, on the whole test split.

The Keras model's answers are the ones `evaluate` recorded (reports/<mode>/predictions.csv), so the test
split is scored once per export only. Per export: its test metrics, the deltas against Keras overall and the
largest in any group, how often its labels are Keras' labels, and whether it is within tolerance. Nothing
here depends on the machine's speed: the timings are `python -m argml.bench litert`'s.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from argml.core.card import ModelCard
from argml.core.labels import TASKS
from argml.evaluation import metrics

HEADLINE = ("gender.accuracy", "race.accuracy", "age.accuracy", "age.bin_accuracy", "age.mae", "age.cs5")


def probabilities_on(classifiers: dict[str, object], dataset) -> tuple[dict[str, dict], dict[str, np.ndarray]]:
    """Every classifier on every batch of a tf.data dataset built `with_meta`:
    ({name: {task: probabilities}}, labels)."""
    probabilities: dict[str, dict[str, list]] = {name: {} for name in classifiers}
    labels: dict[str, list] = {}
    for images, targets in dataset.as_numpy_iterator():
        for name, classifier in classifiers.items():
            for task, values in classifier.probabilities(images).items():
                probabilities[name].setdefault(task, []).append(np.asarray(values))
        for key, values in targets.items():
            labels.setdefault(key, []).append(values)
    return ({name: {task: np.concatenate(parts) for task, parts in tasks.items()}
             for name, tasks in probabilities.items()},
            {key: np.concatenate(parts) for key, parts in labels.items()})


def deltas(export_metrics: dict[str, float], keras_metrics: dict[str, float]) -> dict[str, float]:
    return {key: export_metrics[key] - keras_metrics[key] for key in export_metrics if key in keras_metrics}


def within_tolerance(delta: dict[str, float], accuracy_points: float, mae_years: float) -> bool:
    """Each task's accuracy (9-bin age included) no more than `accuracy_points` below Keras', and the age
    MAE no more than `mae_years` above it. Gains are not penalised."""
    accuracies = ("gender.accuracy", "race.accuracy", "age.accuracy", "age.bin_accuracy")
    return (all(delta[key] >= -accuracy_points / 100 for key in accuracies)
            and delta["age.mae"] <= mae_years)


def _group_values(rows: pd.DataFrame) -> pd.Series:
    return metrics.per_group(rows, 0, 0.95).set_index(["grouping", "group", "metric"])["value"]


def compare(keras_rows: pd.DataFrame, exports: dict[str, object], dataset, card: ModelCard,
            accuracy_points: float = 0.5, mae_years: float = 0.1) -> dict:
    """Each export (`exports`: {name: classifier}) on the test split (`dataset`, built `with_meta`, in the
    order evaluate read it) against the Keras answers `keras_rows` (evaluate's predictions.csv)."""
    probabilities, labels = probabilities_on(exports, dataset)
    rows = {name: metrics.row_outcomes(values, labels, card) for name, values in probabilities.items()}
    for name, table in rows.items():
        if table["file"].tolist() != keras_rows["file"].tolist():
            raise ValueError(f"the {name} export was scored on other faces than evaluate's predictions.csv: "
                             "run `dvc repro evaluate` on these TFRecords first")
    keras_metrics = metrics.summary_metrics(keras_rows)
    keras_groups = _group_values(keras_rows)
    report: dict = {"test_faces": len(keras_rows),
                    "tolerance": {"accuracy_points": accuracy_points, "mae_years": mae_years},
                    "keras": {"metrics": {key: round(keras_metrics[key], 5) for key in HEADLINE}}}
    for name, table in rows.items():
        export_metrics = metrics.summary_metrics(table)
        delta = deltas(export_metrics, keras_metrics)
        group_delta = (_group_values(table) - keras_groups).dropna()
        report[name] = {
            "metrics": {key: round(export_metrics[key], 5) for key in HEADLINE},
            "delta": {key: round(delta[key], 5) + 0.0 for key in HEADLINE},  # + 0.0: no "-0.0"
            "label_agreement": {task: round(float((table[f"{task}_pred"].to_numpy()
                                                   == keras_rows[f"{task}_pred"].to_numpy()).mean()), 5)
                                for task in TASKS},
            "worst_group_delta": {metric: round(float(values.abs().max()), 5)
                                  for metric, values in group_delta.groupby(level="metric") if metric in HEADLINE},
            "within_tolerance": within_tolerance(delta, accuracy_points, mae_years),
        }
    return report
