"""What the live loop shows and records: each person's pooled labels, drawn on the frame, and one JSONL line
per frame."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from argml.core.card import ModelCard
from argml.model.answers import predicted_classes


@dataclass
class Labelled:
    track_id: int | None
    box: tuple[float, float, float, float]
    observations: int
    labels: dict[str, tuple[str, float]] | None  # task -> (class, probability)
    probabilities: dict[str, list[float]] | None


def describe(pooled: dict[str, np.ndarray] | None, card: ModelCard):
    """A person's labels (class, probability) and distributions from their pooled probabilities; age labels
    follow the model's read-out, as in argml.predict and evaluate."""
    if pooled is None:
        return None, None
    batch = {task: np.asarray(p)[None] for task, p in pooled.items()}
    chosen = predicted_classes(batch, card)
    classes = card.classes
    labels = {task: (classes[task][int(chosen[task][0])], float(pooled[task][int(chosen[task][0])]))
              for task in pooled}
    return labels, {task: [round(float(v), 5) for v in p] for task, p in pooled.items()}


def draw(frame: np.ndarray, people: list[Labelled], status: str) -> None:
    for person in people:
        x1, y1, x2, y2 = (int(v) for v in person.box)
        color = (0, 200, 0) if person.labels else (0, 200, 255)
        cv2.rectangle(frame, (x1, y1), (x2, y2), color, 2)
        lines = [f"#{person.track_id}" if person.track_id is not None else "#?"]
        if person.labels:
            lines[0] += f"  n={person.observations}"
            lines += [f"{task} {name} {prob:.0%}" for task, (name, prob) in person.labels.items()]
        for row, text in enumerate(reversed(lines)):
            y = max(12, y1 - 6 - 16 * row)
            cv2.putText(frame, text, (x1, y), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 3, cv2.LINE_AA)
            cv2.putText(frame, text, (x1, y), cv2.FONT_HERSHEY_SIMPLEX, 0.45, color, 1, cv2.LINE_AA)
    cv2.putText(frame, status, (8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(frame, status, (8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (255, 255, 255), 1, cv2.LINE_AA)


def frame_record(index: int, seconds: float, people: list[Labelled]) -> dict:
    """One JSONL line: the frame's time and, per face, track id, box and pooled labels and probabilities."""
    return {"frame": index, "time": round(seconds, 4),
            "faces": [{"track_id": p.track_id, "box": [round(v, 1) for v in p.box],
                       "observations": p.observations,
                       "labels": {task: {"label": name, "probability": round(prob, 5)}
                                  for task, (name, prob) in (p.labels or {}).items()},
                       "probabilities": p.probabilities} for p in people]}
