"""The model's answers per task in the audit's classes: gender (2), race (5) and the report's 9 age bins.

Two sources, one shape (argml.audit.quantify.Answers: predicted class, probabilities, true class if known):

- labelled faces: the model's own validation split, `validation.npz` (argml.model.train.save_validation:
  `probabilities_<task>` and `true_<label>`), beside model.json or logged with the registered model as the
  pyfunc artifact "validation" (argml.serving.pyfunc.validation_file); and the test split, for the proof;
- an audit's faces table (argml.audit.worker): its labels and `<task>_probabilities`.

Age in the exact mode (63 classes) is read in the 9 bins: probabilities summed per bin, and the predicted
bin is the model's read-out (its `age_bin` answer), as the rows show it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from argml.audit.quantify import Answers
from argml.core.card import ModelCard
from argml.core.labels import AGE_BIN_NAMES, TASK_CLASSES, TASKS
from argml.model.age import answer_readout, bin_probabilities

VALIDATION_FILE = "validation.npz"  # argml.model.train.VALIDATION_FILE (not imported: it would load Keras)
TRUE_KEYS = {"gender": "true_gender", "race": "true_race", "age": "true_age_bin"}


def audit_classes() -> dict[str, tuple[str, ...]]:
    """The classes an audit reports per task."""
    return {**TASK_CLASSES, "age": AGE_BIN_NAMES}


def from_probabilities(probabilities: dict[str, np.ndarray], card: ModelCard,
                       true: dict[str, np.ndarray] | None = None) -> dict[str, Answers]:
    """{task: Answers} from the model's raw probabilities per task (age in the card's mode)."""
    answers = {}
    for task in TASKS:
        values = np.asarray(probabilities[task], dtype=np.float64)
        if task == "age":
            predicted = answer_readout(values, card.mode, card.age_values, card.readout)[0]
            values = bin_probabilities(values, card.mode)
        else:
            predicted = values.argmax(axis=1)
        answers[task] = Answers(np.asarray(predicted, dtype=np.int64), values,
                                None if true is None else np.asarray(true[task], dtype=np.int64))
    return answers


def load_labelled(path: str | Path, card: ModelCard) -> dict[str, Answers]:
    """{task: Answers} with true labels from a validation.npz (or a file of the same layout)."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            probabilities = {task: data[f"probabilities_{task}"] for task in TASKS}
            true = {task: data[key] for task, key in TRUE_KEYS.items()}
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} not found: the model's answers on its validation split come with "
                                "models trained by this version of argml (validation.npz beside model.json); for "
                                "an older model, write one with `python -m argml.audit.labelled`") from None
    except (KeyError, ValueError, OSError) as error:
        raise ValueError(f"{path} is not a file of the model's validation answers ({error})") from None
    expected = len(card.mode.classes)
    if probabilities["age"].shape[1] != expected:
        raise ValueError(f"{path} holds {probabilities['age'].shape[1]} age classes, the model has {expected}: "
                         "it belongs to another model")
    return from_probabilities(probabilities, card, true)


def from_faces(faces: pd.DataFrame, card: ModelCard) -> dict[str, Answers]:
    """{task: Answers} of an audit's faces table (no true labels)."""
    classes = audit_classes()
    answers = {}
    for task in TASKS:
        values = np.array(faces[f"{task}_probabilities"].tolist(), dtype=np.float64).reshape(len(faces), -1)
        labels = faces["age_bin" if task == "age" else task]
        if task == "age":
            values = bin_probabilities(values, card.mode) if len(faces) else np.zeros((0, len(AGE_BIN_NAMES)))
        elif not len(faces):
            values = np.zeros((0, len(classes[task])))
        index = {name: number for number, name in enumerate(classes[task])}
        answers[task] = Answers(np.array([index[name] for name in labels], dtype=np.int64), values)
    return answers
