"""Stage evaluate@MODE: test-set metrics overall, per class and per group; MLflow logging and registry.

Reads MODEL_DIR and TFRECORDS_DIR; writes in REPORT_DIR metrics.json (DVC metrics), per_class.csv,
per_group.csv, fairness.csv, predictions.csv (DVC confusion plots) and confusion_<task>.png. Logs the
test metrics, these files, history and TensorBoard logs to the mode's MLflow run, and registers the model
with alias MODE. Params: evaluate.*, mlflow.model_name.
"""

import argparse
import json
from pathlib import Path

import numpy as np

from argml import evaluate, tfrecords, tracking
from argml.classifier import Classifier
from argml.config import load_params
from argml.files import run_as_stage, write_json


def main() -> None:
    run_as_stage()
    parser = argparse.ArgumentParser(description=__doc__)
    for name in ("mode", "model_dir", "tfrecords_dir", "report_dir"):
        parser.add_argument(name)
    args = parser.parse_args()
    params = load_params()
    model_dir, report_dir = Path(args.model_dir), Path(args.report_dir)

    classifier = Classifier(model_dir / "model.keras")
    test = tfrecords.load_dataset(args.tfrecords_dir, "test", args.mode, params.evaluate.batch_size,
                                  shuffle=False, with_meta=True)
    probabilities, labels = evaluate.predict(classifier.model, test)
    rows = evaluate.row_outcomes(probabilities, labels, classifier.description)
    groups = evaluate.per_group(rows, params.evaluate.bootstrap_rounds, params.evaluate.confidence)
    gaps = evaluate.fairness(groups)
    document = evaluate.metrics_document(evaluate.summary_metrics(rows), gaps)

    write_json(report_dir / "metrics.json", document)
    classes = {task: tuple(names) for task, names in classifier.description["classes"].items()}
    evaluate.per_class(rows, classes).to_csv(report_dir / "per_class.csv", index=False)
    groups.to_csv(report_dir / "per_group.csv", index=False)
    gaps.to_csv(report_dir / "fairness.csv", index=False)
    rows.to_csv(report_dir / "predictions.csv", index=False)
    for task, names in classes.items():
        evaluate.save_confusion_png(evaluate.confusion(rows, task, names), names, f"{task} ({args.mode}, test)",
                                    report_dir / f"confusion_{task}.png")

    run_id = json.loads((model_dir / "run.json").read_text())["run_id"]
    tracking.configure(create=True)
    tracking.log_test_metrics(run_id, evaluate.flatten_numeric(document))
    tracking.log_artifacts(run_id, [report_dir / name for name in (
        "metrics.json", "per_class.csv", "per_group.csv", "fairness.csv", "history.csv",
        *(f"confusion_{task}.png" for task in classes))], "evaluation")
    tracking.log_artifacts(run_id, [report_dir / "tensorboard"])
    example = next(test.take(1).as_numpy_iterator())[0][:1].astype(np.uint8)
    version = tracking.log_model(run_id, model_dir, example, params.mlflow.model_name, args.mode)
    headline = {key: document[task][metric] for key, (task, metric) in {
        "gender": ("gender", "accuracy"), "race": ("race", "accuracy"), "age_bins": ("age", "bin_accuracy"),
        "age_mae": ("age", "mae")}.items()}
    print(f"evaluate[{args.mode}]: {len(rows)} test faces {headline}; registered "
          f"{params.mlflow.model_name} v{version} @{args.mode}")


if __name__ == "__main__":
    main()
