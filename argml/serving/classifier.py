"""A trained argml model at inference: aligned faces in, labels and probabilities out.

`Classifier` loads a `.keras` model with its model card (`model.json` beside it); the MLflow pyfunc,
`argml.predict`, `argml.live` and the photo model answer through it or through its LiteRT twin
(argml.serving.litert), and all of them read answers out with argml.model.answers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from argml.core.card import ModelCard
from argml.core.errors import BadInput
from argml.model.answers import predictions_table


def first_line(error: BaseException) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def check_faces(faces, size: int) -> np.ndarray:
    """Aligned RGB faces [B, size, size, 3] with integer values 0-255, as float32; ValueError otherwise
    (images scaled to 0-1 would otherwise be read as black and answered with confident nonsense)."""
    faces = np.asarray(faces)
    if faces.ndim != 4 or faces.shape[1:] != (size, size, 3):
        raise BadInput(f"the model wants aligned RGB faces of shape [N, {size}, {size}, 3], got {list(faces.shape)}")
    if faces.dtype.kind not in "uif":
        raise BadInput(f"the model wants numbers 0-255, got values of type {faces.dtype}")
    if faces.size and (faces.min() < 0 or faces.max() > 255):
        raise BadInput(f"the model wants pixel values 0-255, got {faces.min()}..{faces.max()}")
    if faces.dtype.kind == "f" and not np.array_equal(faces, np.round(faces)):
        raise BadInput("the model wants integer pixel values 0-255 (uint8 RGB), got fractions: images "
                       "scaled to 0-1 must be given as 0-255")
    return faces.astype(np.float32)


class Classifier:
    """The Keras model: aligned RGB faces [B, S, S, 3] 0-255 -> {task: probabilities}."""

    def __init__(self, model_path: str | Path, card: ModelCard | None = None):
        import keras

        model_path = Path(model_path)
        if not model_path.exists():
            raise FileNotFoundError(f"model {model_path} not found")
        self.card = card or ModelCard.load(model_path)
        try:  # safe mode (Keras' default): a Lambda layer, which would run code, is refused
            self.model = keras.saving.load_model(model_path, compile=False)
        except Exception as error:  # noqa: BLE001 - Keras raises many kinds for a file it will not load
            raise BadInput(f"model {model_path} could not be loaded by Keras (refused or damaged: "
                           f"{first_line(error)})") from error
        self.input_size = self.card.input_size

    def probabilities(self, faces: np.ndarray) -> dict[str, np.ndarray]:
        """faces: [B, S, S, 3] RGB 0-255 -> {task: [B, classes]}."""
        outputs = self.model.predict_on_batch(np.asarray(faces, dtype=np.float32))
        return {task: np.asarray(values) for task, values in outputs.items()}

    def predict(self, faces: np.ndarray) -> pd.DataFrame:
        return predictions_table(self.probabilities(faces), self.card)
