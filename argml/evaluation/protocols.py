"""The report's protocol on our data: what 9-bin age accuracy a split that leaks gives.

The report built its TFRecords "following data augmentation" from an 80/10/10 split of UTKFace, which holds
byte-identical copies. Four protocols, each a pool of faces split 80/10/10 (stratified, seeded like the
published split):
- published: our split (byte-identical copies removed first; only training faces augmented);
- (a) duplicates: every parsed image, byte-identical copies included, split at random;
- (b) augment first: our deduplicated faces plus race-balancing copies of every split's faces, the copies
  split independently of their sources (so copies of test faces train, and copies are tested);
- (c) both.
Each protocol trains the same heads (argml.heads, binned mode) on the frozen FaceNet's features (pooled or
bottleneck, as features.head_input caches them), so only the protocol differs; fine-tuning each one would cost a
quarter of an hour here. Byte-identical copies share their kept twin's features; images of label-conflicting
groups (none kept) and the new augmented copies are aligned and run through FaceNet here.
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import cv2
import keras
import numpy as np
import pandas as pd
from tqdm import tqdm

from argml.core.config import AlignParams, AugmentParams, DataParams, TrainParams
from argml.core.images import read_aligned
from argml.core.labels import SPLITS, VARIANTS, AgeMode
from argml.data import augment, faces, utkface
from argml.model import facenet, features
from argml.model.heads import build_heads, compile_model
from argml.model.train import age_values, training_targets

BINNED = AgeMode.of("binned")  # the report's 9 bins: what the protocols compare

PROTOCOLS = ("published", "duplicates", "augment_first", "both")
KEYS = ("age", "gender", "race", "age_bin", "age_class")


def cached_pool(features_dir: str | Path) -> pd.DataFrame:
    """Every cached image (all splits, originals and copies) with its labels, split, variant and feature row."""
    features_dir = Path(features_dir)
    parts = []
    for split in SPLITS:
        cached = dict(np.load(features_dir / f"{split}.labels.npz"))
        parts.append(pd.DataFrame({
            "file": cached["file_name"], "age": cached["age_years"], "gender": cached["gender"],
            "race": cached["race"], "age_bin": cached["age_bin"], "age_class": cached["age_class"],
            "variant": cached["variant"], "split": split, "row": np.arange(len(cached["file_name"]))}))
    return pd.concat(parts, ignore_index=True)


def head_arrays(features_dir: str | Path, head_input: str | None = None) -> dict[str, np.ndarray]:
    """Each split's cached head features (features.head_input: pooled or bottleneck; read from the cache's
    info.json unless given)."""
    head_input = head_input or features.read_info(features_dir).head_input
    return {split: np.load(Path(features_dir) / f"{split}.{head_input}.npy") for split in SPLITS}


def extra_copies(scanned: pd.DataFrame, kept: pd.DataFrame, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """What deduplication removed, from the scan of every raw image (`scanned`, with md5) and the published
    table (`kept`): (byte-identical copies of kept images, with their kept `twin`; images of the groups dropped
    for conflicting labels). A sample (data.limit) keeps the same share of the conflicting groups."""
    missing = scanned[~scanned["file"].isin(kept["file"])]
    twin = kept.drop_duplicates("md5").set_index("md5")["file"]
    copies = missing[missing["md5"].isin(twin.index)].assign(twin=lambda rows: rows["md5"].map(twin))
    deduplicated, report = utkface.deduplicate(scanned)
    conflicting = scanned[~scanned["md5"].isin(deduplicated["md5"])]
    groups = np.sort(conflicting["md5"].unique())
    share = len(kept) / len(deduplicated)
    picked = np.random.default_rng(seed).permutation(groups)[:round(share * len(groups))]
    return copies.reset_index(drop=True), conflicting[conflicting["md5"].isin(picked)].reset_index(drop=True)


class HeadFeatures:
    """The whole frozen FaceNet up to the heads' input (features.head_input), over aligned RGB faces."""

    def __init__(self, weights: str, head_input: str, batch_size: int):
        self.model = facenet.feature_model(facenet.load_facenet(weights), features.head_input_layer(head_input))
        self.batch_size = batch_size

    def __call__(self, images, total: int, what: str) -> np.ndarray:
        out, batch = [], []
        for image in tqdm(images, total=total, desc=f"features {what}", unit="img", mininterval=2):
            batch.append(image)
            if len(batch) == self.batch_size:
                out.append(self.model.predict_on_batch(np.stack(batch).astype(np.float32)))
                batch = []
        if batch:
            out.append(self.model.predict_on_batch(np.stack(batch).astype(np.float32)))
        return np.concatenate(out) if out else np.zeros((0, self.model.output.shape[-1]), np.float32)


def augmented_images(planned: pd.DataFrame, aligned_dir: Path, settings: AugmentParams):
    """Each planned copy as augment.make_images makes it (same adjustment and seed), in memory, RGB. The
    JPEG round trip of the written copies is left out: it moves features less than the adjustments do."""
    for row in planned.itertuples():
        new = augment.adjust(read_aligned(aligned_dir / row.source), row.adjustment,
                             np.random.default_rng(row.seed), settings.max_angle, settings.noise_sigma)
        yield cv2.cvtColor(new, cv2.COLOR_BGR2RGB)


def cached_features(features_dir, head_input: str) -> tuple[pd.DataFrame, np.ndarray]:
    """cached_pool with a `feature` column: its row in the returned array of every split's head features."""
    cache = cached_pool(features_dir)
    arrays = head_arrays(features_dir, head_input)
    offsets = np.cumsum([0] + [len(arrays[split]) for split in SPLITS])
    cache["feature"] = cache["row"] + cache["split"].map(dict(zip(SPLITS, offsets[:-1])))
    return cache, np.concatenate([arrays[split] for split in SPLITS])


def encode_conflicting(conflicting: pd.DataFrame, raw_dir, align: AlignParams,
                       encoder: HeadFeatures) -> tuple[pd.DataFrame, np.ndarray]:
    """Aligns the label-conflicting images (never aligned by the pipeline) and encodes those dlib could align."""
    with tempfile.TemporaryDirectory(prefix="argml-protocols-") as scratch:
        status = faces.align_files(conflicting["file"].tolist(), raw_dir, scratch, align.size, align.padding,
                                   align.upsample, align.workers)
        aligned = status[status["status"].isin(["aligned", "fallback"])]["file"]
        conflicting = conflicting[conflicting["file"].isin(aligned)].reset_index(drop=True)
        images = (cv2.cvtColor(read_aligned(Path(scratch) / name), cv2.COLOR_BGR2RGB) for name in conflicting["file"])
        return conflicting, encoder(images, len(conflicting), "label-conflicting copies")


def held_out_copies(originals: pd.DataFrame, aligned_dir, augmentation: AugmentParams,
                    encoder: HeadFeatures) -> tuple[pd.DataFrame, np.ndarray]:
    """(b): race-balancing copies of the validation and test faces, by the same rule as the training copies."""
    held_out = originals[originals["split"] != "train"]
    planned = augment.plan(held_out[["file", *KEYS]], augmentation.race_target, 0.0, augmentation.seed)
    planned = planned[planned["purpose"] == "race"].reset_index(drop=True)
    return planned, encoder(augmented_images(planned, Path(aligned_dir), augmentation), len(planned),
                            "copies of held-out faces")


def build_pools(features_dir, raw_dir, split_table, aligned_dir, data: DataParams, align: AlignParams,
                augmentation: AugmentParams, batch_size: int) -> tuple[dict[str, pd.DataFrame], np.ndarray, dict]:
    """The four protocols' tables (rows: file, labels, split, `feature` row into the returned array), and counts
    and the heads' input for the report."""
    info = features.read_info(features_dir)
    cache, cached_vectors = cached_features(features_dir, info.head_input)
    originals = cache[cache["variant"] == VARIANTS["original"]]
    race_copies = cache[cache["variant"] == VARIANTS["race"]]

    scanned, _ = utkface.scan(raw_dir)
    copies, conflicting = extra_copies(scanned, utkface.load_table(split_table), data.seed)
    copies = copies.assign(feature=copies["twin"].map(originals.set_index("file")["feature"]))
    copies = copies.dropna(subset=["feature"]).astype({"feature": int})  # twins the limit left out, if any
    encoder = HeadFeatures(info.weights, info.head_input, batch_size)
    conflicting, conflicting_vectors = encode_conflicting(conflicting, raw_dir, align, encoder)
    planned, planned_vectors = held_out_copies(originals, aligned_dir, augmentation, encoder)
    conflicting["feature"] = len(cached_vectors) + np.arange(len(conflicting))
    planned["feature"] = len(cached_vectors) + len(conflicting) + np.arange(len(planned))
    vectors = np.concatenate([cached_vectors, conflicting_vectors, planned_vectors]).astype(np.float32)

    base = originals[["file", *KEYS, "feature"]].assign(source=originals["file"])
    with_duplicates = pd.concat([base, copies[["file", *KEYS, "feature"]].assign(source=copies["twin"]),
                                 conflicting[["file", *KEYS, "feature"]].assign(source=conflicting["md5"])])
    augmented = pd.concat([race_copies[["file", *KEYS, "feature"]].assign(
                               source=race_copies["file"].map(augment.copy_source)),
                           planned[["file", *KEYS, "feature"]]])
    resplit = lambda table: utkface.split(table.reset_index(drop=True), data.val_fraction,  # noqa: E731
                                         data.test_fraction, data.seed)
    published = cache[cache["variant"] != VARIANTS["exact_age"]]
    pools = {
        "published": published[["file", *KEYS, "feature", "split"]].assign(source=published["file"]),
        "duplicates": resplit(with_duplicates),
        "augment_first": resplit(pd.concat([base, augmented])),
        "both": resplit(pd.concat([with_duplicates, augmented])),
    }
    counts = {"byte_identical_copies": int(len(copies)), "label_conflicting_images": int(len(conflicting)),
              "augmented_copies": int(len(race_copies) + len(planned)),
              "model": f"binned heads on the frozen FaceNet's {info.head_input} features"}
    return pools, vectors, counts


def leaked_test_faces(pool: pd.DataFrame) -> int:
    """Test rows whose image, or a byte-identical copy or augmented copy of it, is also in training (rows of
    one image share their `source`)."""
    training_sources = set(pool.loc[pool["split"] == "train", "source"])
    return int(pool.loc[pool["split"] == "test", "source"].isin(training_sources).sum())


def heads_accuracy(pool: pd.DataFrame, vectors: np.ndarray, settings: TrainParams, epochs: int,
                   batch_size: int) -> dict:
    """Train binned heads on a protocol's training rows (validation rows for early stopping); its test
    figures: 9-bin age, gender and race accuracy."""
    keras.utils.set_random_seed(settings.seed)
    splits = {name: pool[pool["split"] == name] for name in SPLITS}
    data = {name: (vectors[rows["feature"].to_numpy()], heads_targets(rows, settings))
            for name, rows in splits.items()}
    heads = build_heads(vectors.shape[1], BINNED, settings.hidden_units, settings.hidden_activation,
                        settings.dropout)
    values = age_values({"age_bin": splits["train"]["age_bin"].to_numpy(),
                         "age_years": splits["train"]["age"].to_numpy()}, BINNED)
    compile_model(heads, settings.head_lr, dataclasses.asdict(settings.lr_factors),
                  dataclasses.asdict(settings.loss_weights), values, settings.age_l1, settings.label_smoothing,
                  settings.steps_per_execution)
    heads.fit(*data["train"], validation_data=data["val"], epochs=epochs, batch_size=batch_size,
              verbose=0, callbacks=[keras.callbacks.EarlyStopping(patience=settings.patience,
                                                                   restore_best_weights=True)])
    outputs = heads(data["test"][0], training=False)
    test = splits["test"]
    truth = {"age": test["age_bin"], "gender": test["gender"], "race": test["race"]}
    return {f"{task}_accuracy": float((np.asarray(outputs[task]).argmax(axis=1) == truth[task].to_numpy()).mean())
            for task in ("age", "gender", "race")}


def heads_targets(rows: pd.DataFrame, settings: TrainParams) -> dict[str, np.ndarray]:
    return training_targets({"age_years": rows["age"].to_numpy(), "race": rows["race"].to_numpy(),
                             "gender": rows["gender"].to_numpy()}, BINNED, settings)


def compare(pools: dict[str, pd.DataFrame], vectors: np.ndarray, settings: TrainParams, epochs: int,
            batch_size: int) -> dict:
    """Per protocol: sizes, how many test rows leak (see leaked_test_faces), and the heads' test figures."""
    report = {}
    for name in tqdm(PROTOCOLS, desc="protocols", unit="protocol"):
        pool = pools[name]
        sizes = pool["split"].value_counts()
        report[name] = {"train": int(sizes.get("train", 0)), "test": int(sizes.get("test", 0)),
                        "leaked_test_faces": leaked_test_faces(pool),
                        **{key: round(value, 4) for key, value in heads_accuracy(pool, vectors, settings,
                                                                                  epochs, batch_size).items()}}
    return report
