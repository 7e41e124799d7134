"""Stage train@MODE: heads on frozen features, then fine-tuning; one MLflow run per age mode.

Reads FEATURES_DIR; writes MODEL_DIR (model.keras, the same bytes for the same weights; its card model.json with
the age read-out, the alignment settings and the precisions; validation.npz; the MLflow run is tagged with their
digest, so later stages find it) and, in REPORT_DIR, history.csv (DVC plots) and validation.json (DVC metrics: the
validation split under the chosen read-out). TensorBoard's logs (weight histograms; they hold wall times, so they
are no DVC output) go to REPORT_DIR/tensorboard and to the MLflow run. A killed run resumes from
data/checkpoints/MODE (same settings only), in the same MLflow run. Params: train.*, and all of params.yaml is
logged to MLflow.
"""

import argparse
import dataclasses
import shutil
import sys
from pathlib import Path

from argml.core.errors import stage
from argml.core.config import flatten, load_params
from argml.core.files import atomic_path, write_json
from argml.core.labels import AgeMode
from argml.evaluation.metrics import cached_split_metrics
from argml.model.features import read_info
from argml.model.train import prepare_checkpoints, train
from argml.tracking import registry, runs


@stage("train")
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    for name in ("mode", "features_dir", "model_dir", "report_dir"):
        parser.add_argument(name)
    args = parser.parse_args()
    params = load_params()
    mode = AgeMode.of(args.mode)

    report_dir, checkpoints = Path(args.report_dir), Path("data/checkpoints") / mode.name
    resuming = prepare_checkpoints(checkpoints, {"mode": mode.name, "train": dataclasses.asdict(params.train),
                                                 "features": read_info(args.features_dir).to_dict()})
    if not resuming:  # a resumed run keeps the logs of the epochs it finished
        shutil.rmtree(report_dir / "tensorboard", ignore_errors=True)
    with runs.training_run(mode.name, flatten(params), checkpoints / "mlflow_run.json") as run_id:
        result = train(args.features_dir, args.model_dir, mode, params.train, checkpoint_dir=checkpoints,
                       log_dir=report_dir / "tensorboard", on_epoch=runs.epoch_logger(run_id),
                       align=params.align)  # faces must be aligned alike
        validation = cached_split_metrics(result.validation, result.validation_labels, result.card)
        print(f"train[{mode.name}]: age read-out {dataclasses.asdict(result.card.readout)}; validation "
              + ", ".join(f"{name} {value:.4f}" for name, value in validation.items()))
        runs.log_missing_epochs(run_id, result.history)
        runs.log_test_metrics(run_id, validation, prefix="val")
        write_json(report_dir / "validation.json", {
            "metrics": {name: round(value, 4) for name, value in validation.items()},
            "readout": result.readout_scores,
            "precision": {"features": result.card.features.precision, "train": result.card.precision}})
        with atomic_path(report_dir / "history.csv") as staging:
            result.history.to_csv(staging, index=False)
        runs.log_artifacts(run_id, [report_dir / "tensorboard"])
        registry.mark_run(run_id, args.model_dir)
    print(f"train[{mode.name}]: {len(result.history)} epochs; MLflow run {run_id}")

    return 0


if __name__ == "__main__":
    sys.exit(main())
