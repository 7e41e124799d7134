"""`argml bench facenet`: FaceNet's build and weight-load times (cold: parsing the frozen graph; and from the
cache), its forward throughput at batch 32 on real aligned faces, and what the features stage computes with
Keras and with a LiteRT fp32 conversion (images/s and the cosine between the two)."""

from __future__ import annotations

import os
import tempfile
import time

import numpy as np

from argml.bench.report import describe, real_faces, spread


def add_arguments(parser) -> None:
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32)


def _rate(forward, images: np.ndarray, runs: int, repeats: int = 4) -> list[float]:
    forward(images)  # warm-up: tracing
    rates = []
    for _ in range(runs):
        start = time.perf_counter()
        for _ in range(repeats):
            forward(images)
        rates.append(repeats * len(images) / (time.perf_counter() - start))
    return rates


def features_litert(backbone, images: np.ndarray, runs: int) -> dict:
    """The features stage's two outputs (the input of Mixed_7a and the pooled features) with Keras and with a
    LiteRT fp32 conversion (XNNPACK): images/s of each and the smallest cosine between them."""
    import keras
    from ai_edge_litert.interpreter import Interpreter

    from argml.model import facenet
    from argml.serving import convert

    lower, _ = facenet.split(backbone, "Mixed_7a")
    both = keras.Model(backbone.inputs, [lower.output, facenet.feature_model(backbone, "pooled").output])
    with tempfile.TemporaryDirectory() as scratch:
        path = convert.convert(both, os.path.join(scratch, "features.tflite"), "fp32")
        runner = Interpreter(model_path=str(path), num_threads=os.cpu_count()).get_signature_runner("serving_default")
        [input_name] = runner.get_input_details()
        lite = lambda x: runner(**{input_name: x.astype(np.float32)})  # noqa: E731
        keras_outputs = sorted((np.asarray(o) for o in both.predict_on_batch(images)), key=lambda a: a.shape[-1])
        lite_outputs = sorted(lite(images).values(), key=lambda a: a.shape[-1])
        cosines = {}
        for ours, theirs in zip(lite_outputs, keras_outputs):
            ours, theirs = ours.reshape(len(ours), -1), theirs.reshape(len(theirs), -1)
            cosine = (ours * theirs).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(theirs, axis=1)
            cosines[f"{ours.shape[1]}-d"] = float(cosine.min())
        return {"cosine_min": cosines, "keras_images_per_s": spread(_rate(both.predict_on_batch, images, runs)),
                "litert_fp32_images_per_s": spread(_rate(lite, images, runs))}


def run(args) -> dict:
    from argml.model import facenet

    cold, cached = [], []
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory() as cache:
            os.environ["ARGML_CACHE"] = cache
            start = time.perf_counter()
            facenet.load_facenet()
            cold.append(time.perf_counter() - start)
            start = time.perf_counter()
            model = facenet.load_facenet()
            cached.append(time.perf_counter() - start)
    images = real_faces(args.batch_size)
    figures = {"load_cold_s": spread(cold), "load_cached_s": spread(cached),
               "forward_images_per_s": spread(_rate(model.predict_on_batch, images, args.runs)),
               "features_stage": features_litert(model, images, args.runs)}
    print(f"build + load weights, cold: {describe(figures['load_cold_s'], 's')}; from the cache: "
          f"{describe(figures['load_cached_s'], 's')}")
    print(f"forward, batch {args.batch_size}: {describe(figures['forward_images_per_s'], 'images/s')}")
    stage = figures["features_stage"]
    print(f"features stage: Keras {describe(stage['keras_images_per_s'], 'images/s')}, LiteRT fp32 "
          f"{describe(stage['litert_fp32_images_per_s'], 'images/s')}, cosine min {stage['cosine_min']}")
    return figures
