"""Stage champion: point the alias `champion` of the registered face model and of the photo model at the
chosen age mode's versions.

Reads both modes' metrics and export reports (so it runs after them); writes OUT_JSON. Params: mlflow.model_name,
mlflow.champion.
"""

import argparse

import mlflow

from argml import browser, photos, tracking
from argml.config import load_params
from argml.files import run_as_stage, write_json


def main() -> None:
    run_as_stage()
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out_json")
    args = parser.parse_args()
    params = load_params().mlflow
    version = tracking.set_champion(params.model_name, params.champion)
    photo_version = tracking.set_champion(photos.model_name(params.model_name), params.champion)
    write_json(args.out_json, {"model": params.model_name, "champion": params.champion, "version": version,
                               "photo_model": photos.model_name(params.model_name), "photo_version": photo_version})
    print(f"champion: models:/{params.model_name}@champion -> version {version} ({params.champion}); "
          f"models:/{photos.model_name(params.model_name)}@champion -> version {photo_version}")
    experiment = mlflow.get_experiment_by_name(tracking.EXPERIMENT)
    print(f"champion: compare the runs at {browser.runs_link(mlflow.get_tracking_uri(), experiment.experiment_id)}")


if __name__ == "__main__":
    main()
