"""Training and prediction batches read from the feature cache (argml.model.features) instead of images.

The cache holds each face's input to the fine-tuning block (memory-mapped float16), so fine-tuning and the
validation read-out never run FaceNet's frozen layers again.
"""

from __future__ import annotations

import math

import keras
import numpy as np

from argml.core.errors import BadInput
from argml.core.labels import TASKS


class CachedBatches(keras.utils.PyDataset):
    """Batches of cached block inputs (memory-mapped float16) and their targets, reshuffled every epoch.

    With `mirrored` (the same rows' inputs from mirrored images), each example of an epoch is read from the
    original or the mirror, drawn at random per epoch: mirror-flip augmentation without running the frozen
    layers again."""

    def __init__(self, arrays: np.ndarray, rows: np.ndarray, targets: dict[str, np.ndarray], batch_size: int,
                 shuffle: bool, seed: int = 0, drop_remainder: bool = False, mirrored: np.ndarray | None = None):
        super().__init__()
        self.arrays, self.rows, self.targets, self.mirrored = arrays, rows, targets, mirrored
        self.batch_size, self.shuffle, self.drop_remainder = batch_size, shuffle, drop_remainder
        if drop_remainder and len(rows) < batch_size:
            raise BadInput(f"{len(rows)} examples make no full batch of {batch_size}: lower train.batch_size")
        if mirrored is not None and not shuffle:
            raise ValueError("mirrored inputs are a training augmentation: they need shuffle=True")
        self.rng = np.random.default_rng(seed)
        self.order = np.arange(len(rows))
        self.on_epoch_end()

    def __len__(self) -> int:
        if self.drop_remainder:
            return len(self.rows) // self.batch_size
        return math.ceil(len(self.rows) / self.batch_size)

    def __getitem__(self, index: int):
        picked = np.sort(self.order[index * self.batch_size:(index + 1) * self.batch_size])  # sorted: fast mmap
        rows = self.rows[picked]
        if self.mirrored is None:
            inputs = self.arrays[rows].astype(np.float32)
        else:  # each row from one of the two arrays only
            flip = self.flip[picked]
            inputs = np.empty((len(rows), *self.arrays.shape[1:]), np.float32)
            inputs[~flip] = self.arrays[rows[~flip]]
            inputs[flip] = self.mirrored[rows[flip]]
        return inputs, {task: values[picked] for task, values in self.targets.items()}

    def on_epoch_end(self):
        if self.shuffle:
            self.order = self.rng.permutation(len(self.rows))
            if self.mirrored is not None:
                self.flip = self.rng.random(len(self.rows)) < 0.5


def predict_cached(model: keras.Model, split: dict, batch_size: int) -> dict[str, np.ndarray]:
    """A model from the cached block on (block inputs -> class probabilities), over a split's cached rows in
    order (features.load_split): {task: probabilities}."""
    outputs = model.predict(CachedBatches(split["lower"], split["index"], split["targets"], batch_size, False),
                            verbose=0)
    return {task: np.asarray(outputs[task]) for task in TASKS}


def pooled_block_inputs(split: dict, chunk: int = 1024) -> np.ndarray:
    """Each of a split's rows' cached block input averaged over its positions (float32 [N, C]): the lower
    level of the multi-level features, read from the memory map a chunk at a time."""
    rows = split["index"]
    return np.concatenate([split["lower"][rows[start:start + chunk]].astype(np.float32).mean(axis=(1, 2))
                           for start in range(0, len(rows), chunk)])
