"""The expensive part of training, done once: FaceNet's frozen layers run over every image a single time.

For each split this writes, from the TFRecords (all variants, so both age modes can use them):
- `<split>.lower.npy`: float16 [N, H, W, C], the input of the fine-tuning block (for Mixed_7a: 8x8x896);
- `<split>.<features>.npy`: float32 [N, D], the frozen backbone's head input (pooled: 1792 or
  bottleneck: 512), which the head-only phase trains on;
- `<split>.labels.npz`: age_years, age_bin, age_class, race, gender, variant, file_name;
- with `mirror_train`, `train.mirrored.lower.npy`: the block inputs of the same training images mirrored
  (computed in the same pass), which fine-tuning picks at random instead of the originals (argml.train).
Arrays are written through memory maps, so memory stays flat whatever the dataset size.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from tqdm import tqdm

from argml.model import facenet, precision
from argml.data import tfrecords
from argml.core.files import read_stage_json
from argml.core.card import FeatureCache
from argml.core.labels import SPLITS, VARIANTS, AgeMode

MIRRORED = "mirrored.lower.npy"
HEAD_INPUTS = {"pooled": "pooled", "bottleneck": "Bottleneck.BatchNorm"}
LABEL_KEYS = ("age_years", "age_bin", "age_class", "race", "gender", "variant")


def head_input_layer(head_input: str) -> str:
    if head_input not in HEAD_INPUTS:
        raise ValueError(f"unknown head input {head_input!r}; use one of {sorted(HEAD_INPUTS)}")
    return HEAD_INPUTS[head_input]


def cache_split(lower, upper_features, tfrecords_dir: Path, out_dir: Path, split: str, head_input: str,
                batch_size: int, mirror: bool = False) -> int:
    total = tfrecords.count(tfrecords_dir, split)  # every variant: both age modes read this cache
    dataset = tfrecords.load_dataset(tfrecords_dir, split, batch_size=batch_size, shuffle=False, with_meta=True)
    lower_shape = tuple(lower.output.shape[1:])
    cached = np.lib.format.open_memmap(out_dir / f"{split}.lower.npy", "w+", np.float16, (total, *lower_shape))
    head_features = np.lib.format.open_memmap(out_dir / f"{split}.{head_input}.npy", "w+", np.float32,
                                              (total, upper_features.output.shape[-1]))
    mirrored = (np.lib.format.open_memmap(out_dir / f"{split}.{MIRRORED}", "w+", np.float16, (total, *lower_shape))
                if mirror else None)
    labels: dict[str, list] = {key: [] for key in (*LABEL_KEYS, "file")}
    position = 0
    with tqdm(total=total, desc=f"features {split}", unit="img", mininterval=2) as progress:
        for images, targets in dataset.as_numpy_iterator():
            block_input = lower.predict_on_batch(images)
            end = position + len(images)
            cached[position:end] = block_input
            head_features[position:end] = upper_features.predict_on_batch(block_input)
            if mirrored is not None:
                mirrored[position:end] = lower.predict_on_batch(images[:, :, ::-1])  # NHWC: flip the width
            for key in labels:
                labels[key].append(targets[key])
            position = end
            progress.update(len(images))
    for array in (cached, head_features, mirrored):
        if array is not None:
            array.flush()
    arrays = {key: np.concatenate(value) for key, value in labels.items()}
    # np.savez has a parameter named `file`; names as str, not bytes (object arrays need pickle to load)
    arrays["file_name"] = np.array([name.decode() for name in arrays.pop("file")])
    np.savez(out_dir / f"{split}.labels.npz", **arrays)
    return total


def cache_all(tfrecords_dir: str | Path, out_dir: str | Path, from_block: str, head_input: str,
              weights: str = facenet.CASIA_WEBFACE, batch_size: int = 64, mirror_train: bool = False,
              compute: str = "float32") -> FeatureCache:
    """Cache every split (the training split also mirrored, with `mirror_train`), the frozen layers computing
    in `compute` (float32, or bfloat16: see argml.model.precision); returns (and writes as info.json) what was
    cached."""
    tfrecords_dir, out_dir = Path(tfrecords_dir), Path(out_dir)
    model = facenet.load_facenet(weights)
    lower, upper = facenet.split(model, from_block)
    upper_features = facenet.feature_model(upper, head_input_layer(head_input))
    with precision.mixed_bfloat16(compute):
        counts = {split: cache_split(lower, upper_features, tfrecords_dir, out_dir, split, head_input, batch_size,
                                     mirror=mirror_train and split == "train")
                  for split in SPLITS}
    info = FeatureCache(from_block, head_input, weights, tuple(lower.output.shape[1:]), counts, mirror_train,
                        compute)
    (out_dir / "info.json").write_text(json.dumps(info.to_dict(), indent=2) + "\n")
    return info


def read_info(folder: str | Path) -> FeatureCache:
    return FeatureCache.from_dict(read_stage_json(Path(folder) / "info.json", "features"))


def load_split(folder: str | Path, split: str, mode: AgeMode, info: FeatureCache | None = None) -> dict:
    """A split's cached arrays for one age mode: {"lower" (memory-mapped), "mirrored" (likewise, or None),
    "index", "head", "labels", "targets"}.

    Binned mode leaves out the exact-age balancing copies (variant 2); targets["age"] is the bin or the
    exact class according to the mode. `info`: the cache's info.json, when the caller has read it already.
    """
    folder = Path(folder)
    info = info or read_info(folder)
    labels = dict(np.load(folder / f"{split}.labels.npz"))
    left_out = [VARIANTS[variant] for variant in mode.left_out_variants]
    index = np.flatnonzero(~np.isin(labels["variant"], left_out))
    labels = {key: value[index] for key, value in labels.items()}
    age = labels[mode.label_column]
    return {
        "lower": np.load(folder / f"{split}.lower.npy", mmap_mode="r"),
        "mirrored": (np.load(folder / f"{split}.{MIRRORED}", mmap_mode="r")
                     if split == "train" and info.mirror_train else None),
        "index": index,  # rows of `lower` that belong to this mode
        "head": np.load(folder / f"{split}.{info.head_input}.npy")[index],
        "labels": labels,
        "targets": {"age": age, "race": labels["race"], "gender": labels["gender"]},
    }
