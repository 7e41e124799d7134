"""`argml bench litert`: faces/s of a trained model classifying real aligned faces in batches of 1 and 8, with
Keras and with its LiteRT exports (fp32 and int8), and the files' sizes. What the export stage used to time: the
pipeline now records only what depends on the model (reports/MODE/export.json), and this the machine's speed.
Needs `dvc repro export@MODE` (the model folder and its exports)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from argml.bench.report import describe, real_faces, spread


def add_arguments(parser) -> None:
    parser.add_argument("--mode", default="binned", help="the age mode whose model to time (default %(default)s)")
    parser.add_argument("--model-dir", help="the Keras model's folder (default data/models/MODE)")
    parser.add_argument("--export-dir", help="its LiteRT exports (default data/litert/MODE)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--runs", type=int, default=5, help="timings per backend and batch size")
    parser.add_argument("--seconds", type=float, default=2.0, help="length of one timing")
    parser.add_argument("--threads", type=int, default=0, help="LiteRT threads (0 = one per CPU)")


def faces_per_second(classifier, faces: np.ndarray, batch_size: int, runs: int, seconds: float) -> list[float]:
    """`runs` timings of about `seconds` each, classifying batches of `batch_size` of `faces` (after a warm-up)."""
    batch = faces[np.arange(batch_size) % len(faces)]
    classifier.probabilities(batch)  # warm-up: tracing, tensor allocation
    rates = []
    for _ in range(runs):
        done, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            classifier.probabilities(batch)
            done += batch_size
        rates.append(done / (time.perf_counter() - start))
    return rates


def backends(model_dir: Path, export_dir: Path, threads: int) -> dict:
    """{name: classifier}: the Keras model and each LiteRT export beside it."""
    from argml.serving import convert
    from argml.serving.classifier import Classifier
    from argml.serving.litert import LiteClassifier

    keras_model = Classifier(model_dir / "model.keras")
    exports = {kind: LiteClassifier(export_dir / convert.export_name(kind), keras_model.card, threads)
               for kind in convert.KINDS}
    return {"keras": keras_model, **exports}


def run(args) -> dict:
    from argml.core.labels import AgeMode

    mode = AgeMode.of(args.mode)
    model_dir = Path(args.model_dir or f"data/models/{mode.name}")
    export_dir = Path(args.export_dir or f"data/litert/{mode.name}")
    for folder in (model_dir, export_dir):
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder} not found: run `dvc repro export@{mode.name}` first")
    classifiers = backends(model_dir, export_dir, args.threads)
    faces = real_faces(max(args.batch_sizes))
    figures: dict = {"mode": mode.name, "threads": args.threads or os.cpu_count(), "faces_per_s": {},
                     "size_mb": {"keras": round((model_dir / "model.keras").stat().st_size / 1e6, 1)}}
    for name, classifier in classifiers.items():
        figures["faces_per_s"][name] = {
            f"batch_{size}": spread(faces_per_second(classifier, faces, size, args.runs, args.seconds), 1)
            for size in args.batch_sizes}
        if name != "keras":
            figures["size_mb"][name] = round(classifier.path.stat().st_size / 1e6, 1)
        for size in args.batch_sizes:
            print(f"{name}, batch {size}: {describe(figures['faces_per_s'][name][f'batch_{size}'], 'faces/s')}")
    return figures
