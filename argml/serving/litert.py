"""A classifier that runs a LiteRT export of an argml model on the CPU (XNNPACK).

`LiteClassifier` answers like argml.serving.classifier.Classifier (same `probabilities`, `predict`, `card`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from argml.core.card import ModelCard
from argml.core.errors import BadInput, ChecksumError
from argml.core.files import file_digest
from argml.model.answers import predictions_table


class LiteClassifier:
    """A LiteRT export of an argml model: aligned RGB faces [B, S, S, 3] 0-255 -> {task: probabilities}.
    Not thread-safe: give each thread its own."""

    def __init__(self, model_path: str | Path, card: ModelCard | None = None, threads: int = 0,
                 sha256: str | None = None):
        from ai_edge_litert.interpreter import Interpreter

        model_path = Path(model_path)
        if not model_path.exists():
            raise FileNotFoundError(f"LiteRT model {model_path} not found")
        if sha256 is not None and file_digest(model_path, "sha256") != sha256:
            raise ChecksumError(f"{model_path} does not match its recorded sha256: refusing to load it")
        self.card = card or ModelCard.load(model_path)
        self.input_size = self.card.input_size
        self.path = model_path
        try:
            self.interpreter = Interpreter(model_path=str(model_path), num_threads=threads or os.cpu_count())
            self.runner = self.interpreter.get_signature_runner("serving_default")
            [self.input_name] = self.runner.get_input_details()
        except (ValueError, RuntimeError) as error:  # LiteRT's words for a file that is not such a model
            raise BadInput(f"{model_path} is not a LiteRT export of an argml model ({error})") from error

    def probabilities(self, faces: np.ndarray) -> dict[str, np.ndarray]:
        """faces: [B, S, S, 3] RGB 0-255 -> {task: [B, classes]}."""
        outputs = self.runner(**{self.input_name: np.asarray(faces, dtype=np.float32)})
        return {task: np.array(values) for task, values in outputs.items()}

    def predict(self, faces: np.ndarray) -> pd.DataFrame:
        return predictions_table(self.probabilities(faces), self.card)
