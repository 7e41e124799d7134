"""A trained argml model at inference: aligned faces in, labels and probabilities out.

Loads a `.keras` model with its `model.json` (classes, age values, mode); used by the MLflow pyfunc,
`argml.predict` and `argml.live`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from argml import age
from argml.labels import AGE_BIN_NAMES

TASKS = ("gender", "race", "age")  # the model's outputs, in the order reports show them


def age_readout(age_probabilities: np.ndarray, description: dict) -> tuple[np.ndarray, np.ndarray]:
    """(9-bin index, years) of each row under the read-out the model recorded (argml.age; models without one:
    arg-max and expected age)."""
    readout = description.get("readout", age.DEFAULT_READOUT)
    mode, values = description["mode"], description["age_values"]
    return (age.read_bins(age_probabilities, mode, values, readout["bins"]),
            age.read_years(age_probabilities, mode, values, readout["years"]))


def predicted_classes(probabilities: dict[str, np.ndarray], description: dict) -> dict[str, np.ndarray]:
    """Each row's predicted class per task: the arg-max, except binned age, which follows the bin read-out."""
    predicted = {task: np.asarray(probabilities[task]).argmax(axis=1) for task in TASKS}
    if description["mode"] == "binned":
        predicted["age"] = age_readout(probabilities["age"], description)[0]
    return predicted


def predictions_table(probabilities: dict[str, np.ndarray], description: dict) -> pd.DataFrame:
    """One row per face: for each task the label, its probability and the whole distribution; plus the age
    bin and the age in years under the model's read-out."""
    columns: dict[str, object] = {}
    for task, best in predicted_classes(probabilities, description).items():
        values = np.asarray(probabilities[task], dtype=np.float64)
        names = description["classes"][task]
        columns[task] = [names[index] for index in best]
        columns[f"{task}_probability"] = values[np.arange(len(values)), best]
        columns[f"{task}_probabilities"] = [row.tolist() for row in values]
    bins, years = age_readout(np.asarray(probabilities["age"], dtype=np.float64), description)
    columns["age_bin"] = [AGE_BIN_NAMES[index] for index in bins]
    columns["age_years"] = years
    return pd.DataFrame(columns)


def check_faces(faces, size: int) -> np.ndarray:
    """Aligned RGB faces [B, size, size, 3] with integer values 0-255, as float32; ValueError otherwise
    (images scaled to 0-1 would otherwise be read as black and answered with confident nonsense)."""
    faces = np.asarray(faces)
    if faces.ndim != 4 or faces.shape[1:] != (size, size, 3):
        raise ValueError(f"the model wants aligned RGB faces of shape [N, {size}, {size}, 3], got {list(faces.shape)}")
    if faces.dtype.kind not in "uif":
        raise ValueError(f"the model wants numbers 0-255, got values of type {faces.dtype}")
    if faces.size and (faces.min() < 0 or faces.max() > 255):
        raise ValueError(f"the model wants pixel values 0-255, got {faces.min()}..{faces.max()}")
    if faces.dtype.kind == "f" and not np.array_equal(faces, np.round(faces)):
        raise ValueError("the model wants integer pixel values 0-255 (uint8 RGB), got fractions: images "
                         "scaled to 0-1 must be given as 0-255")
    return faces.astype(np.float32)


class Classifier:
    def __init__(self, model_path: str | Path, description: dict | None = None):
        import keras

        model_path = Path(model_path)
        if not model_path.exists():
            raise FileNotFoundError(f"model {model_path} not found")
        self.model = keras.saving.load_model(model_path, compile=False)
        if description is None:
            description_path = model_path.with_name("model.json")
            description = json.loads(description_path.read_text())
        self.description = description
        self.input_size = int(description["input_size"])

    def probabilities(self, faces: np.ndarray) -> dict[str, np.ndarray]:
        """faces: [B, S, S, 3] RGB 0-255 -> {task: [B, classes]}."""
        outputs = self.model.predict_on_batch(np.asarray(faces, dtype=np.float32))
        return {task: np.asarray(values) for task, values in outputs.items()}

    def predict(self, faces: np.ndarray) -> pd.DataFrame:
        return predictions_table(self.probabilities(faces), self.description)
