"""Stage champion: point the registered model's alias `champion` at the chosen age mode's version.

Reads both modes' metrics (so it runs after them); writes OUT_JSON. Params: mlflow.model_name, mlflow.champion.
"""

import argparse

from argml import tracking
from argml.config import load_params
from argml.files import run_as_stage, write_json


def main() -> None:
    run_as_stage()
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out_json")
    args = parser.parse_args()
    params = load_params().mlflow
    version = tracking.set_champion(params.model_name, params.champion)
    write_json(args.out_json, {"model": params.model_name, "champion": params.champion, "version": version})
    print(f"champion: models:/{params.model_name}@champion -> version {version} ({params.champion})")


if __name__ == "__main__":
    main()
