"""The registered face model: an MLflow pyfunc around the Keras model, logged with argml's own code.

It takes aligned RGB faces [N, 160, 160, 3] with integer values 0-255 and answers per task the label, its
probability and the distribution (argml.model.answers); anything else is refused with a 400 from
`mlflow models serve`. Its `code_paths` carry the argml package, so it loads where argml is not installed.
"""

from __future__ import annotations

import importlib.metadata
import tempfile
import warnings
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.models import ModelSignature, infer_signature

from argml.core.card import ModelCard
from argml.serving.classifier import Classifier, check_faces
from argml.tracking import registry
from argml.tracking.runs import configure, git_commit, reopened

PACKAGE = Path(__file__).resolve().parents[1]  # the argml package: logged as the models' code


class ArgmlPyfunc(mlflow.pyfunc.PythonModel):
    """Aligned RGB faces [B, 160, 160, 3] (0-255) -> per task: label, probability, probabilities."""

    def load_context(self, context):
        self.classifier = Classifier(context.artifacts["keras_model"], ModelCard.load(context.artifacts["description"]))

    def predict(self, context, model_input: np.ndarray, params=None) -> pd.DataFrame:
        # np.ndarray: a hint MLflow accepts without inferring a schema from it (checks: check_faces)
        try:
            faces = check_faces(model_input, self.classifier.input_size)
        except ValueError as error:  # a 400 from `mlflow models serve`, not a confident answer
            raise mlflow.exceptions.MlflowException.invalid_parameter_value(str(error)) from None
        return self.classifier.predict(faces)


def _requirements() -> list[str]:
    names = ("tensorflow-cpu", "keras", "numpy", "pandas", "mlflow")
    return [f"{name}=={importlib.metadata.version(name)}" for name in names]


def log_model(run_id: str, model_dir: str | Path, example_faces: np.ndarray, model_name: str, alias: str) -> int:
    """Log the model as a pyfunc with signature and input example, register it, set `alias`; -> version."""
    model_dir = Path(model_dir)
    example = example_faces.astype(np.uint8)
    output = Classifier(model_dir / "model.keras").predict(example)
    # No input schema: with one, MLflow casts JSON input to its dtype (0-1 floats to uint8 zeros) before
    # predict could refuse it; ArgmlPyfunc.predict checks shape and values itself (classifier.check_faces).
    signature = ModelSignature(inputs=None, outputs=infer_signature(example, output).outputs)
    with reopened(run_id):  # the training run keeps its end time
        info = mlflow.pyfunc.log_model(
            name="model", python_model=ArgmlPyfunc(),
            artifacts={"keras_model": str(model_dir / "model.keras"), "description": str(model_dir / "model.json"),
                       "validation": str(model_dir / "validation.npz")},
            signature=signature, input_example=example, pip_requirements=_requirements(),
            metadata={"input": "aligned RGB faces [N, 160, 160, 3], integers 0-255"},
            code_paths=[str(PACKAGE)],  # loads where argml is not installed
            registered_model_name=model_name)
    version = int(info.registered_model_version)
    client = mlflow.MlflowClient()
    # Provenance: `dvc pull` brings data/models/<mode>; these tags let anyone check it is this version.
    for key, value in {"git_commit": git_commit(), "age_mode": alias, registry.MODEL_TAG: registry.model_digest(model_dir)}.items():
        client.set_model_version_tag(model_name, str(version), key, value)
    client.set_registered_model_alias(model_name, alias, version)
    return version


def load_classifier(uri: str):
    """The Classifier inside a registered pyfunc model (e.g. models:/argml@champion)."""
    configure()
    # The Classifier holds the Keras model in memory, so the downloaded copy (about 90 MB) can go at once;
    # MLflow's own download folder would stay in the system's temp folder for good.
    with tempfile.TemporaryDirectory(prefix="argml-model-") as download:
        try:
            model = mlflow.pyfunc.load_model(uri, dst_path=download)
        except mlflow.exceptions.MlflowException as error:
            raise FileNotFoundError(
                f"no model at {uri} in {mlflow.get_tracking_uri()}: train one with `dvc repro` (it registers "
                f"`argml` with aliases binned, exact and champion), or pass --model path/to/model.keras "
                f"({error.message.splitlines()[0]})") from error
    mismatch = registry.local_model_mismatch(uri)
    if mismatch:
        warnings.warn(mismatch, stacklevel=2)
    return model.unwrap_python_model().classifier


def artifact_file(uri: str, name: str, dst: str | Path) -> Path:
    """One artifact of a registered model (e.g. "validation": its answers on its validation split, or
    "description": model.json), downloaded into `dst` without the rest of the model (audits need only these)."""
    from mlflow.models import Model
    from mlflow.store.artifact.models_artifact_repo import ModelsArtifactRepository

    configure()
    repository = ModelsArtifactRepository(uri)
    artifacts = Model.load(repository.download_artifacts("MLmodel", str(dst))).flavors["python_function"].get(
        "artifacts", {})
    if name not in artifacts:
        raise FileNotFoundError(f"{uri} carries no {name!r} artifact: register a model trained by this version of "
                                "argml (dvc repro)")
    return Path(repository.download_artifacts(artifacts[name]["path"], str(dst)))
