"""`argml bench quantization`: the two int8 LiteRT exports a trained model can have, side by side: dynamic-range
(int8 weights, activations quantized on the fly: what the export stage ships) and full-integer (int8 weights
and activations, their ranges calibrated on `--calibration` faces of the training split). For each: how often
its labels are Keras' labels on `--test-faces` faces of the test split (0: all of it), and faces/s at batch 1
and 8 (`--runs` timings of about 2 s each), with the file sizes."""

from __future__ import annotations

import itertools
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from argml.bench.report import spread
from argml.core.errors import BadInput

KINDS = ("int8", "int8-full")


def add_arguments(parser) -> None:
    parser.add_argument("--model-dir", default="data/models/binned", help="a trained model: model.keras + model.json")
    parser.add_argument("--tfrecords", default="data/tfrecords", help="the TFRecords (stage tfrecords)")
    parser.add_argument("--test-faces", type=int, default=0, help="test faces compared (0: the whole test split)")
    parser.add_argument("--calibration", type=int, default=300, help="training faces that calibrate int8-full")
    parser.add_argument("--runs", type=int, default=3, help="timings per export and batch size")


def faces_of(tfrecords: str | Path, split: str, mode, count: int, shuffle: bool) -> np.ndarray:
    """Up to `count` faces (all when 0) of a split, uint8 [N, S, S, 3]."""
    from argml.data import tfrecords as records

    dataset = records.load_dataset(tfrecords, split, mode, batch_size=64, shuffle=shuffle, seed=0)
    faces = []
    for images, _ in dataset.as_numpy_iterator():
        faces.append(images)
        if count and sum(map(len, faces)) >= count:
            break
    faces = np.concatenate(faces)
    return faces[:count] if count else faces


def rate(classifier, faces: np.ndarray, batch: int, runs: int, seconds: float = 2.0) -> list[float]:
    """faces/s of `classifier.probabilities` on batches of `batch` real faces, `runs` timings."""
    batches = [faces[i:i + batch] for i in range(0, len(faces) - batch + 1, batch)] or [faces[:batch]]
    classifier.probabilities(batches[0])  # warm-up
    rates = []
    for _ in range(runs):
        done, start = 0, time.perf_counter()
        for chunk in itertools.cycle(batches):
            classifier.probabilities(chunk)
            done += len(chunk)
            if time.perf_counter() - start >= seconds:
                break
        rates.append(done / (time.perf_counter() - start))
    return rates


def run(args) -> dict:
    from argml.core.card import ModelCard
    from argml.serving import convert
    from argml.serving.classifier import Classifier
    from argml.serving.litert import LiteClassifier

    model_dir = Path(args.model_dir)
    if args.calibration < 1 or args.runs < 1 or args.test_faces < 0:
        raise BadInput("bench quantization: --calibration and --runs at least 1, --test-faces 0 or more")
    card = ModelCard.load(model_dir / "model.json")
    keras_model = Classifier(model_dir / "model.keras", card)
    test = faces_of(args.tfrecords, "test", card.mode, args.test_faces, shuffle=False)
    calibration = faces_of(args.tfrecords, "train", card.mode, args.calibration, shuffle=True).astype(np.float32)
    keras_labels = keras_model.predict(test)
    figures: dict = {"model_dir": str(model_dir), "test_faces": len(test), "calibration_faces": len(calibration)}
    with tempfile.TemporaryDirectory(prefix="argml-quantization-") as scratch:
        for kind in KINDS:
            path = Path(scratch) / convert.export_name(kind)
            convert.convert(keras_model.model, path, kind, [calibration] if kind == "int8-full" else None)
            lite = LiteClassifier(path, card, threads=os.cpu_count() or 1)
            labels = lite.predict(test)
            figures[kind] = {
                "size_mb": round(path.stat().st_size / 1e6, 1),
                "label_agreement": {column: round(float((labels[column] == keras_labels[column]).mean()), 5)
                                    for column in ("gender", "race", "age", "age_bin") if column in labels},
                "faces_per_s_batch1": spread(rate(lite, test, 1, args.runs), 1),
                "faces_per_s_batch8": spread(rate(lite, test, 8, args.runs), 1),
            }
            print(f"quantization {kind}: labels as Keras {figures[kind]['label_agreement']}, "
                  f"{figures[kind]['faces_per_s_batch8']['median']} faces/s at batch 8, {figures[kind]['size_mb']} MB")
    return figures
