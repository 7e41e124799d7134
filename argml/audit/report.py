"""An audit's report from its faces and photos tables: report.json, report.md and report.png.

Per task (gender, race, the 9 age bins): the raw shares (the model's labels counted, with an interval from
resampling the faces) and the corrected shares (argml.audit.quantify's chosen method, with an interval that
resamples the faces and the model's validation faces). Then faces per photo, photos without a face, and every
unreadable file with its reason. Nothing in it depends on when, where or on how many workers the audit ran, so
a rerun gives the same files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from argml.audit import answers, quantify
from argml.core.card import ModelCard
from argml.core.files import atomic_path, write_json
from argml.core.labels import TASKS

# The correction per task that argml.audit.proof chose on the full-data models (docs/audit.md, "Does the
# correction work?"): the lowest error where that task's own make-up is skewed, or the split's own.
CHOSEN = {"gender": "pacc", "race": "pacc", "age": "em"}
ROUNDS = 1000
CONFIDENCE = 0.95
LISTED_PROBLEMS = 1000  # report.json lists at most this many unreadable files (photos.parquet has them all)


@dataclass(frozen=True)
class Settings:
    methods: dict[str, str] = field(default_factory=lambda: dict(CHOSEN))  # task -> argml.audit.quantify method
    rounds: int = ROUNDS
    confidence: float = CONFIDENCE
    seed: int = 0

    @classmethod
    def one_method(cls, method: str, rounds: int = ROUNDS, confidence: float = CONFIDENCE) -> Settings:
        """Every task corrected by `method` ("chosen": the table's choice per task, CHOSEN)."""
        if method != "chosen" and method not in quantify.METHODS:
            raise ValueError(f"unknown correction {method!r}; use chosen or one of {', '.join(quantify.METHODS)}")
        return cls(dict(CHOSEN) if method == "chosen" else {task: method for task in TASKS}, rounds, confidence)


def photo_counts(photos: pd.DataFrame, duplicates: int) -> dict:
    faces = photos["faces"].to_numpy()
    readable = photos["status"] != "unreadable"
    per_photo = {str(count): int(((faces == count) & readable).sum()) for count in range(3)}
    per_photo["3+"] = int(((faces >= 3) & readable).sum())
    return {"inputs": int(len(photos)), "duplicates_skipped": int(duplicates),
            "with_faces": int((photos["status"] == "faces").sum()),
            "without_face": int((photos["status"] == "no_face").sum()),
            "unreadable": int((~readable).sum()), "faces": int(faces.sum()),
            "faces_per_photo": per_photo,
            "mean_faces_per_photo_with_faces": round(float(faces[faces > 0].mean()), 3) if (faces > 0).any() else 0.0}


def task_shares(faces: pd.DataFrame, card: ModelCard, validation: dict[str, quantify.Answers],
                settings: Settings) -> dict:
    collection = answers.from_faces(faces, card)
    classes = answers.audit_classes()
    result = {}
    for number, task in enumerate(TASKS):
        seed = settings.seed + number
        raw = quantify.shares("cc", collection[task], None, settings.rounds, settings.confidence, seed)
        method = settings.methods[task]
        corrected = quantify.shares(method, collection[task], validation[task], settings.rounds,
                                    settings.confidence, seed)
        result[task] = {"method": method, "raw": raw.to_dict(classes[task]), "corrected": corrected.to_dict(classes[task])}
    return result


def build(faces: pd.DataFrame, photos: pd.DataFrame, card: ModelCard, validation: dict[str, quantify.Answers],
          settings: Settings, model: dict, duplicates: int = 0) -> dict:
    """The report document (see the module docstring); `model` describes the model version used."""
    problems = photos[photos["status"] == "unreadable"]
    return {
        "model": model,
        "correction": {"methods": settings.methods, "rounds": settings.rounds, "confidence": settings.confidence,
                       "seed": settings.seed, "validation_faces": len(validation["race"])},
        "photos": photo_counts(photos, duplicates),
        "shares": task_shares(faces, card, validation, settings),
        "unreadable": [{"file": row.file, "reason": row.problem}
                       for row in problems.head(LISTED_PROBLEMS).itertuples()],
        "unreadable_not_listed": max(0, len(problems) - LISTED_PROBLEMS),
    }


def _percent(value: float) -> str:
    return "n/a" if np.isnan(value) else f"{100 * value:.1f} %"


def markdown(report: dict) -> str:
    photos, correction = report["photos"], report["correction"]
    level = f"{100 * correction['confidence']:.0f} %"
    lines = [
        "# Audit of a photo collection",
        "",
        f"Model {report['model'].get('uri', '?')} (version {report['model'].get('version', '-')}, "
        f"{report['model'].get('backend', '?')}). Labels are UTKFace's appearance-based categories, not anyone's "
        "identity; the shares describe the collection, never a person.",
        "",
        f"{photos['inputs']} photos: {photos['with_faces']} with faces ({photos['faces']} faces), "
        f"{photos['without_face']} without a face, {photos['unreadable']} unreadable"
        + (f", {photos['duplicates_skipped']} duplicate entries skipped" if photos["duplicates_skipped"] else "") + ".",
        "",
        f"Corrected with the model's errors on {correction['validation_faces']} of its validation faces; intervals: "
        f"{level}, {correction['rounds']} bootstrap rounds over the faces and the validation faces.",
    ]
    for task, shares in report["shares"].items():
        lines += ["", f"## {task} (corrected: {shares['method']})", "", "| class | raw | corrected | interval |",
                  "|---|---:|---:|---|"]
        for name, corrected in shares["corrected"].items():
            lines.append(f"| {name} | {_percent(shares['raw'][name]['share'])} | {_percent(corrected['share'])} | "
                         f"{_percent(corrected['low'])} – {_percent(corrected['high'])} |")
    if report["unreadable"]:
        lines += ["", "## Unreadable files", ""]
        lines += [f"- {item['reason']}" for item in report["unreadable"][:20]]
        more = len(report["unreadable"]) - 20 + report["unreadable_not_listed"]
        if more > 0:
            lines.append(f"- and {more} more (photos.parquet lists them all)")
    return "\n".join(lines) + "\n"


def plot(report: dict, path: str | Path) -> None:
    """Raw vs corrected shares per task, with their intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(report["shares"]), figsize=(15, 4.2),
                                gridspec_kw={"width_ratios": [len(s["raw"]) + 1 for s in report["shares"].values()]})
    for axis, (task, shares) in zip(np.atleast_1d(axes), report["shares"].items()):
        names = list(shares["raw"])
        x = np.arange(len(names))
        for offset, kind, colour in ((-0.2, "raw", "#999999"), (0.2, "corrected", "#1f77b4")):
            values = np.array([[shares[kind][n]["share"], shares[kind][n]["low"], shares[kind][n]["high"]]
                               for n in names], dtype=np.float64) * 100
            axis.bar(x + offset, values[:, 0], 0.4, label=kind, color=colour,
                     yerr=[values[:, 0] - values[:, 1], values[:, 2] - values[:, 0]], capsize=3)
        axis.set_xticks(x, names, rotation=45 if len(names) > 5 else 0, ha="right" if len(names) > 5 else "center")
        axis.set_title(f"{task} (corrected: {shares['method']})")
        axis.set_ylabel("share of faces (%)")
    np.atleast_1d(axes)[0].legend()
    level = f"{100 * report['correction']['confidence']:.0f} %"
    figure.suptitle(f"Raw (counted labels) vs corrected shares, {level} intervals")
    figure.tight_layout()
    with atomic_path(path) as staging:
        figure.savefig(staging, dpi=100, format="png", metadata={"Software": None})
    plt.close(figure)


def write(report: dict, folder: str | Path) -> list[Path]:
    folder = Path(folder)
    paths = [folder / "report.json", folder / "report.md", folder / "report.png"]
    write_json(paths[0], report)
    with atomic_path(paths[1]) as staging:
        staging.write_text(markdown(report))
    plot(report, paths[2])
    return paths
