"""`argml bench finetune`: training images/s of FaceNet from each start block (`--blocks`; default Mixed_7a
and two starts inside the block17 stack) with argml's binned heads: train steps at batch 64 on random inputs
of the cached shape, data loading left out, as argml.model.train runs them."""

from __future__ import annotations

import time

import numpy as np

from argml.bench.report import describe, spread

BLOCKS = ("Mixed_7a", "Repeat_1.block17_9", "Repeat_1.block17_6")


def add_arguments(parser) -> None:
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--blocks", nargs="+", default=list(BLOCKS), help="the start blocks to time")
    parser.add_argument("--batch-size", type=int, default=64)


def run(args, steps: int = 4) -> dict:
    import keras

    from argml.core.labels import AgeMode
    from argml.model import facenet, features
    from argml.model.age import smoothed_targets
    from argml.model.heads import build_heads, compile_model

    binned = AgeMode.of("binned")
    backbone = facenet.load_facenet()
    rng = np.random.default_rng(0)
    size = args.batch_size
    ages = rng.integers(1, 90, size)
    targets = {"age": np.concatenate([smoothed_targets(ages, binned, 0.0), ages[:, None]], axis=1),
               "race": np.eye(5)[rng.integers(0, 5, size)], "gender": np.eye(2)[rng.integers(0, 2, size)]}
    figures = {}
    for block in args.blocks:
        _, upper = facenet.split(backbone, block)
        upper_features = facenet.feature_model(upper, features.head_input_layer("pooled"))
        heads = build_heads(upper_features.output.shape[-1], binned, dropout=0.2)
        block_input = keras.Input(upper.input_shape[1:])
        model = keras.Model(block_input, heads(upper_features(block_input)))
        compile_model(model, 1e-4, {"age": 1.0, "race": 0.1, "gender": 0.1, "backbone": 0.1},
                      {"age": 1.0, "race": 1.0, "gender": 1.0}, age_values=range(9))
        inputs = rng.normal(size=(size, *upper.input_shape[1:])).astype(np.float32)
        model.train_on_batch(inputs, targets)  # warm-up: tracing
        rates = []
        for _ in range(args.runs):
            start = time.perf_counter()
            for _ in range(steps):
                model.train_on_batch(inputs, targets)
            rates.append(steps * size / (time.perf_counter() - start))
        figures[block] = {"images_per_s": spread(rates)}
        print(f"fine-tune from {block}, batch {size}: {describe(figures[block]['images_per_s'], 'images/s')}")
    return figures
