"""Stage train@MODE: heads on frozen features, then fine-tuning; one MLflow run per age mode.

Reads FEATURES_DIR; writes MODEL_DIR (model.keras, model.json with classes, the age read-out and the
alignment settings, run.json with the MLflow run id) and, in REPORT_DIR, history.csv (DVC plots),
validation.json (DVC metrics: the validation split under the chosen read-out) and tensorboard/ (weight
histograms). A killed run resumes from data/checkpoints/MODE (same settings only), in the same MLflow run.
Params: train.*, and all of params.yaml is logged to MLflow.
"""

import argparse
import dataclasses
import json
from pathlib import Path

from argml import tracking
from argml.config import flatten, load_params
from argml.files import atomic_path, run_as_stage, write_json
from argml.features import read_info
from argml.train import prepare_checkpoints, train


def rounded(metrics: dict[str, float]) -> dict[str, float]:
    return {name: round(value, 4) for name, value in metrics.items()}


def main() -> None:
    run_as_stage()
    parser = argparse.ArgumentParser(description=__doc__)
    for name in ("mode", "features_dir", "model_dir", "report_dir"):
        parser.add_argument(name)
    args = parser.parse_args()
    params = load_params()

    report_dir, checkpoints = Path(args.report_dir), Path("data/checkpoints") / args.mode
    prepare_checkpoints(checkpoints, {"mode": args.mode, "train": dataclasses.asdict(params.train),
                                      "features": read_info(args.features_dir)})
    with tracking.training_run(args.mode, flatten(params), checkpoints / "mlflow_run.json") as run_id:
        history, validation = train(args.features_dir, args.model_dir, args.mode, params.train,
                        checkpoint_dir=checkpoints, log_dir=report_dir / "tensorboard",
                        on_epoch=tracking.epoch_logger(run_id),
                        describe={"align": dataclasses.asdict(params.align)})  # faces must be aligned alike
        tracking.log_missing_epochs(run_id, history)
        tracking.log_test_metrics(run_id, validation["metrics"], prefix="val")
        write_json(report_dir / "validation.json", {"metrics": rounded(validation["metrics"]),
                                                    "readout": validation["readout"]})
        with atomic_path(report_dir / "history.csv") as staging:
            history.to_csv(staging, index=False)
        (Path(args.model_dir) / "run.json").write_text(json.dumps({"run_id": run_id, "mode": args.mode}) + "\n")
    print(f"train[{args.mode}]: {len(history)} epochs; MLflow run {run_id}")


if __name__ == "__main__":
    main()
