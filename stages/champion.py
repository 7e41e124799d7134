"""Stage champion: point the alias `champion` of the registered face model and of the photo model at the
chosen age mode's versions.

Reads both modes' metrics and export reports (so it runs after them); writes OUT_JSON. Params: mlflow.model_name,
mlflow.champion.
"""

import argparse
import sys

import mlflow

from argml.core.config import load_params
from argml.core.errors import stage
from argml.core.files import write_json
from argml.serving import photos
from argml.tracking import registry, runs, ui


@stage("champion")
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out_json")
    args = parser.parse_args()
    params = load_params().mlflow
    version = registry.set_champion(params.model_name, params.champion)
    photo_version = registry.set_champion(photos.model_name(params.model_name), params.champion)
    write_json(args.out_json, {"model": params.model_name, "champion": params.champion, "version": version,
                               "photo_model": photos.model_name(params.model_name), "photo_version": photo_version})
    print(f"champion: models:/{params.model_name}@champion -> version {version} ({params.champion}); "
          f"models:/{photos.model_name(params.model_name)}@champion -> version {photo_version}")
    experiment = mlflow.get_experiment_by_name(runs.EXPERIMENT)
    print(f"champion: compare the runs at {ui.runs_link(mlflow.get_tracking_uri(), experiment.experiment_id)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
