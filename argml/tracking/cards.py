"""A model card beside a registered model version: `model_card.md` among the version's model files, and a
short summary as the version's description (what MLflow's UI shows on the version's page).

The card itself is written by argml.evaluation.model_card; the evaluate stage calls `attach` after it
registers the version.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import mlflow

CARD_FILE = "model_card.md"


def _logged_model_id(model_name: str, version: int) -> str:
    """The id of the logged model (MLflow 3) a registered version was made from. The SQL store's versions
    leave `model_id` empty, but their source is `models:/<model id>`."""
    model_version = mlflow.MlflowClient().get_model_version(model_name, str(version))
    if model_version.model_id:
        return model_version.model_id
    if not model_version.source.startswith("models:/m-"):
        raise ValueError(f"{model_name} version {version} was not made from a logged model "
                         f"(source {model_version.source})")
    return model_version.source.removeprefix("models:/")


def attach(model_name: str, version: int, card: str, summary: str) -> None:
    client = mlflow.MlflowClient()
    with tempfile.TemporaryDirectory(prefix="argml-card-") as folder:
        path = Path(folder) / CARD_FILE
        path.write_text(card)
        client.log_model_artifact(_logged_model_id(model_name, version), str(path))
    client.update_model_version(model_name, str(version), description=summary)


def card_of(model_name: str, version: int) -> str:
    """The model card logged beside a registered version."""
    client = mlflow.MlflowClient()
    location = client.get_logged_model(_logged_model_id(model_name, version)).artifact_location
    with tempfile.TemporaryDirectory(prefix="argml-card-") as folder:
        return Path(mlflow.artifacts.download_artifacts(f"{location}/{CARD_FILE}", dst_path=folder)).read_text()
