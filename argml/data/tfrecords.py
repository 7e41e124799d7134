"""Sharded TFRecords per split, and the tf.data pipeline that reads them back.

Each example: the JPEG bytes of an aligned face, every label (age in years, gender, race, age_bin,
age_class), the file name, and `variant`: 0 original, 1 race-balancing copy, 2 exact-age-balancing copy
(used only by the exact age mode). `manifest.json` beside the shards holds counts per split and variant.
TensorFlow stays at this edge: the model code never needs it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from argml.core.files import read_stage_json
from argml.core.labels import SPLITS, VARIANTS, AgeMode
from argml.data.utkface import with_files

INT_FEATURES = ("age", "gender", "race", "age_bin", "age_class", "variant")


def _tf():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf  # imported late: a TensorFlow import costs ~7 s and is needed only here

    return tf


def _example(tf, image_bytes: bytes, row) -> bytes:
    feature = {name: tf.train.Feature(int64_list=tf.train.Int64List(value=[int(getattr(row, name))]))
               for name in INT_FEATURES}
    feature["image"] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[image_bytes]))
    feature["file"] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[row.file.encode()]))
    # deterministic: protobuf map order otherwise follows Python's per-process string hashing
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString(deterministic=True)


def write_split(rows: pd.DataFrame, out_dir: Path, split: str, shard_size: int) -> list[str]:
    """Write `rows` (columns: path, file, labels, variant) as shards `<split>-NNNNN-of-NNNNN.tfrecord`."""
    tf = _tf()
    shard_count = max(1, -(-len(rows) // shard_size))
    names = [f"{split}-{index:05d}-of-{shard_count:05d}.tfrecord" for index in range(shard_count)]
    progress = tqdm(total=len(rows), desc=f"tfrecords {split}", unit="img", mininterval=1)
    for index, name in enumerate(names):
        with tf.io.TFRecordWriter(str(out_dir / name)) as writer:
            for row in rows.iloc[index * shard_size:(index + 1) * shard_size].itertuples():
                writer.write(_example(tf, Path(row.path).read_bytes(), row))
                progress.update()
    progress.close()
    return names


def write_all(table: pd.DataFrame, out_dir: str | Path, shard_size: int) -> dict:
    """Write every split of `table` (rows must have a `split`, `path` and `variant`) and the manifest."""
    out_dir = Path(out_dir)
    manifest = {"shard_size": shard_size, "splits": {}}
    for split in SPLITS:
        rows = table[table["split"] == split]
        if split == "train":  # originals and copies interleaved, so any prefix of the shards is balanced
            rows = rows.sample(frac=1.0, random_state=0)
        shards = write_split(rows, out_dir, split, shard_size)
        manifest["splits"][split] = {
            "examples": int(len(rows)),
            "per_variant": {name: int((rows["variant"] == code).sum()) for name, code in VARIANTS.items()},
            "shards": shards,
        }
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def read_manifest(folder: str | Path) -> dict:
    return read_stage_json(Path(folder) / "manifest.json", "tfrecords")


def count(folder: str | Path, split: str, mode: AgeMode | None = None) -> int:
    """Examples `load_dataset(folder, split, mode)` yields per epoch (every variant when `mode` is None)."""
    info = read_manifest(folder)["splits"][split]
    left_out = mode.left_out_variants if mode else ()
    return info["examples"] - sum(info["per_variant"][variant] for variant in left_out)


def load_dataset(folder: str | Path, split: str, mode: AgeMode | None = None, batch_size: int = 32,
                 shuffle: bool | None = None, seed: int = 0, with_meta: bool = False):
    """A ready tf.data.Dataset of (images, targets): images uint8 [B, H, W, 3]; targets a dict of int labels
    {"age", "race", "gender"}, where age is the mode's label (the bin or the exact class). With `mode` None,
    every variant is read and targets hold race and gender only (with `with_meta`, everything). With
    `with_meta`, targets also hold age_years, age_bin, age_class, variant and file, for caching and evaluation.

    Shuffles by default for the training split only. Decoding runs in parallel; batches are prefetched.
    """
    tf = _tf()
    left_out = [VARIANTS[variant] for variant in mode.left_out_variants] if mode else []
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; use one of {SPLITS}")
    folder = Path(folder)
    files = [str(folder / name) for name in read_manifest(folder)["splits"][split]["shards"]]
    shuffle = split == "train" if shuffle is None else shuffle
    spec = {name: tf.io.FixedLenFeature([], tf.int64) for name in INT_FEATURES}
    spec["image"] = tf.io.FixedLenFeature([], tf.string)
    spec["file"] = tf.io.FixedLenFeature([], tf.string)

    def parse(record):
        example = tf.io.parse_single_example(record, spec)
        image = tf.io.decode_jpeg(example["image"], channels=3)
        targets = {"age": example[mode.label_column]} if mode is not None else {}
        targets.update(race=example["race"], gender=example["gender"])
        if with_meta:
            targets.update(age_years=example["age"], age_bin=example["age_bin"], age_class=example["age_class"],
                           variant=example["variant"], file=example["file"])
        return image, targets, example["variant"]

    dataset = tf.data.TFRecordDataset(files, num_parallel_reads=tf.data.AUTOTUNE)
    if shuffle:
        dataset = dataset.shuffle(8192, seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.map(parse, num_parallel_calls=tf.data.AUTOTUNE)
    if left_out:
        dataset = dataset.filter(lambda image, targets, variant: tf.reduce_all(variant != left_out))
    dataset = dataset.map(lambda image, targets, variant: (image, targets))
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def stack_labels(dataset) -> dict[str, np.ndarray]:
    """All targets of a (finite) dataset, concatenated: handy for evaluation and tests."""
    parts: dict[str, list] = {}
    for _, targets in dataset.as_numpy_iterator():
        for key, value in targets.items():
            parts.setdefault(key, []).append(value)
    return {key: np.concatenate(values) for key, values in parts.items()}


def examples_table(split_table: pd.DataFrame, aligned_dir: str | Path, augmented_dir: str | Path) -> pd.DataFrame:
    """Every example to write: aligned images of the split table (those alignment could read), plus the
    augmented training copies listed in `<augmented_dir>/index.csv`."""
    originals = with_files(split_table, aligned_dir).assign(variant=VARIANTS["original"])
    copies = pd.read_csv(Path(augmented_dir) / "index.csv")
    copies = copies.assign(split="train", path=[str(Path(augmented_dir) / name) for name in copies["file"]],
                           variant=copies["purpose"].map(VARIANTS))
    return pd.concat([originals, copies], ignore_index=True)
