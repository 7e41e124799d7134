"""Stage train@MODE: heads on frozen features, then fine-tuning; one MLflow run per age mode.

Reads FEATURES_DIR; writes MODEL_DIR (model.keras, model.json with classes and the alignment settings,
run.json with the MLflow run id) and, in
REPORT_DIR, history.csv (DVC plots) and tensorboard/ (weight histograms). An interrupted run resumes from
data/checkpoints/MODE. Params: train.*, and all of params.yaml is logged to MLflow.
"""

import argparse
import dataclasses
import json
from pathlib import Path

from argml import tracking
from argml.config import flatten, load_params
from argml.files import atomic_path
from argml.train import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    for name in ("mode", "features_dir", "model_dir", "report_dir"):
        parser.add_argument(name)
    args = parser.parse_args()
    params = load_params()

    run_id = tracking.start_run(args.mode, flatten(params))
    report_dir = Path(args.report_dir)
    history = train(args.features_dir, args.model_dir, args.mode, params.train,
                    checkpoint_dir=Path("data/checkpoints") / args.mode, log_dir=report_dir / "tensorboard",
                    callbacks=[tracking.EpochLogger(run_id)],
                    describe={"align": dataclasses.asdict(params.align)})  # faces must be aligned alike
    with atomic_path(report_dir / "history.csv") as staging:
        history.to_csv(staging, index=False)
    (Path(args.model_dir) / "run.json").write_text(json.dumps({"run_id": run_id, "mode": args.mode}) + "\n")
    print(f"train[{args.mode}]: {len(history)} epochs; MLflow run {run_id}")


if __name__ == "__main__":
    main()
