"""A model's answers from its probabilities: the class per task and the table every entry point returns.

Gender, race and exact age are the arg-max; the binned age follows the bin read-out the model card records,
and every answer carries the 9-bin label and the years of that read-out (argml.model.age).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from argml.core.card import ModelCard
from argml.core.labels import AGE_BIN_NAMES, TASKS
from argml.model.age import answer_readout


def predicted_classes(probabilities: dict[str, np.ndarray], card: ModelCard) -> dict[str, np.ndarray]:
    """Each row's predicted class per task: the arg-max, except binned age, which follows the bin read-out."""
    predicted = {task: np.asarray(probabilities[task]).argmax(axis=1) for task in TASKS}
    if card.mode.binned:
        predicted["age"] = answer_readout(probabilities["age"], card.mode, card.age_values, card.readout)[0]
    return predicted


def predictions_table(probabilities: dict[str, np.ndarray], card: ModelCard) -> pd.DataFrame:
    """One row per face: for each task the label, its probability and the whole distribution; plus the age
    bin and the age in years under the model's read-out."""
    columns: dict[str, object] = {}
    for task, best in predicted_classes(probabilities, card).items():
        values = np.asarray(probabilities[task], dtype=np.float64)
        names = card.classes[task]
        columns[task] = [names[index] for index in best]
        columns[f"{task}_probability"] = values[np.arange(len(values)), best]
        columns[f"{task}_probabilities"] = [row.tolist() for row in values]
    bins, years = answer_readout(np.asarray(probabilities["age"], dtype=np.float64), card.mode, card.age_values,
                                 card.readout)
    columns["age_bin"] = [AGE_BIN_NAMES[index] for index in bins]
    columns["age_years"] = years
    return pd.DataFrame(columns)
