"""Stage evaluate@MODE: test-set metrics overall, per class and per group; MLflow logging and registry.

Reads MODEL_DIR and TFRECORDS_DIR; writes in REPORT_DIR metrics.json (DVC metrics), per_class.csv,
per_group.csv, fairness.csv, predictions.csv (DVC confusion plots) and confusion_<task>.png. Logs the
test metrics, these files and the history to the mode's MLflow run, and registers the model with alias MODE,
its model card (argml.evaluation.model_card) beside it, and records that version in REGISTERED (cached by DVC,
not committed: a fresh clone lacks it, so this stage runs there and registers the model in its new registry even
when its committed reports already match). Params: evaluate.*, mlflow.model_name.
"""

import argparse
import sys
from pathlib import Path

import numpy as np

from argml.core.config import load_params
from argml.core.errors import stage
from argml.core.files import write_json
from argml.core.labels import AgeMode
from argml.data import tfrecords
from argml.evaluation import metrics, model_card
from argml.serving import pyfunc
from argml.serving.classifier import Classifier
from argml.tracking import cards, registry, runs


@stage("evaluate")
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    for name in ("mode", "model_dir", "tfrecords_dir", "report_dir", "registered"):
        parser.add_argument(name)
    args = parser.parse_args()
    params = load_params()
    mode = AgeMode.of(args.mode)
    model_dir, report_dir = Path(args.model_dir), Path(args.report_dir)

    classifier = Classifier(model_dir / "model.keras")
    test = tfrecords.load_dataset(args.tfrecords_dir, "test", mode, params.evaluate.batch_size, shuffle=False,
                                  with_meta=True)
    probabilities, labels = metrics.predict(classifier.model, test)
    rows = metrics.row_outcomes(probabilities, labels, classifier.card)
    groups = metrics.per_group(rows, params.evaluate.bootstrap_rounds, params.evaluate.confidence)
    gaps = metrics.fairness(groups)
    document = metrics.metrics_document(metrics.summary_metrics(rows), gaps)
    metrics.write_reports(report_dir, document, rows, groups, gaps, classifier.card, mode.name)

    runs.configure(create=True)
    run_id = registry.run_of(model_dir)
    runs.log_test_metrics(run_id, metrics.flatten_numeric(document))
    runs.log_artifacts(run_id, [report_dir / name for name in (*metrics.REPORT_FILES, "history.csv")], "evaluation")
    example = next(test.take(1).as_numpy_iterator())[0][:1].astype(np.uint8)
    version = pyfunc.log_model(run_id, model_dir, example, params.mlflow.model_name, mode.name)
    cards.attach(params.mlflow.model_name, version,
                 *model_card.from_reports(report_dir, mode.name, params.evaluate, params.mlflow.model_name))
    write_json(args.registered, {"model": params.mlflow.model_name, "alias": mode.name, "version": version})
    headline = {key: document[task][metric] for key, (task, metric) in {
        "gender": ("gender", "accuracy"), "race": ("race", "accuracy"), "age_bins": ("age", "bin_accuracy"),
        "age_mae": ("age", "mae")}.items()}
    print(f"evaluate[{mode.name}]: {len(rows)} test faces {headline}; registered "
          f"{params.mlflow.model_name} v{version} @{mode.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
