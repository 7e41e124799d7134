"""Two-phase multi-task training on the cached features (see argml.features).

Phase 1 trains the three heads on the frozen backbone's features (seconds per epoch). Phase 2 fine-tunes
FaceNet from the cached block onward together with the heads, reading the cached block inputs instead of
images, so the frozen layers never run again. Both phases: early stopping on validation loss (best weights
restored), BackupAndRestore so an interrupted run resumes at its last finished epoch, TensorBoard with
weight histograms. The result is one Keras model from aligned RGB faces (0-255) to class probabilities.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import shutil
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from argml import evaluate, facenet, features, tfrecords
from argml.age import choose_readout, smoothed_targets
from argml.config import TrainParams
from argml.classifier import TASKS
from argml.heads import build_heads, class_names, compile_model
from argml.labels import TASK_CLASSES


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
            raise ValueError(f"{len(rows)} examples make no full batch of {batch_size}: lower train.batch_size")
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


def multi_level_features(upper_features: keras.Model, lower_shape) -> keras.Model:
    """block input -> [the top features, the block input averaged over positions], concatenated: what the
    heads see with `train.multi_level` (the heads phase reads the same from the cache, pooled_block_inputs)."""
    block_input = keras.Input(tuple(lower_shape), name="multi_level_input")
    pooled = keras.layers.GlobalAveragePooling2D(name="block_input_pooled")(block_input)
    both = keras.layers.Concatenate(name="multi_level")([upper_features(block_input), pooled])
    return keras.Model(block_input, both, name="multi_level_features")


def _callbacks(phase: str, checkpoint_dir: Path, log_dir: Path, patience: int, first_step: int,
               on_epoch) -> list:
    callbacks = [
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience, restore_best_weights=True),
        keras.callbacks.BackupAndRestore(str(checkpoint_dir / phase)),
        # survives a kill; an epoch it holds but the MLflow run lacks is logged at the end (log_missing_epochs)
        keras.callbacks.CSVLogger(str(checkpoint_dir / f"{phase}.csv"), append=True),
    ]
    if on_epoch is not None:
        callbacks.append(keras.callbacks.LambdaCallback(
            on_epoch_end=lambda epoch, logs: on_epoch(first_step + epoch + 1, logs or {})))
    if keras.backend.backend() == "tensorflow":  # TensorBoard's writer is TensorFlow's
        callbacks.append(keras.callbacks.TensorBoard(str(log_dir / phase), histogram_freq=1, write_graph=False))
    return callbacks


def _phase_history(checkpoint_dir: Path, phase: str) -> pd.DataFrame:
    """The epochs a phase finished, across interruptions: its CSV log, one row per epoch (the last wins)."""
    path = checkpoint_dir / f"{phase}.csv"
    if not path.exists() or path.stat().st_size == 0:
        return pd.DataFrame()
    frame = pd.read_csv(path).drop_duplicates("epoch", keep="last").sort_values("epoch")
    frame.insert(0, "phase", phase)
    return frame.drop(columns="epoch").reset_index(drop=True)


def _numbered(phases: list[pd.DataFrame]) -> pd.DataFrame:
    history = pd.concat([frame for frame in phases if len(frame)], ignore_index=True)
    history.insert(0, "epoch", range(1, len(history) + 1))
    return history


def prepare_checkpoints(checkpoint_dir: str | Path, fingerprint: dict) -> bool:
    """Keep `checkpoint_dir` only if it was written for the same settings; -> True when resuming."""
    checkpoint_dir = Path(checkpoint_dir)
    marker = checkpoint_dir / "settings.json"
    text = json.dumps(fingerprint, sort_keys=True, default=str)
    if marker.exists() and marker.read_text() == text:
        return True
    if checkpoint_dir.exists():
        print(f"train: removing checkpoints of other settings in {checkpoint_dir}")
        shutil.rmtree(checkpoint_dir)
    checkpoint_dir.mkdir(parents=True)
    marker.write_text(text)
    return False


def age_values(train_labels: dict[str, np.ndarray], mode: str) -> list[float]:
    """The age each age class stands for (mean training age of the class), for expected-age predictions."""
    column = train_labels[tfrecords.age_column(mode)]
    frame = pd.DataFrame({"cls": column, "age": train_labels["age_years"]})
    means = frame.groupby("cls")["age"].mean()
    fallback = {index: float(index + 1) for index in range(len(class_names(mode)["age"]))}  # exact: class+1
    return [float(means.get(index, fallback[index])) for index in range(len(class_names(mode)["age"]))]


def training_targets(labels: dict[str, np.ndarray], mode: str, settings: TrainParams) -> dict[str, np.ndarray]:
    """What each head learns from (see heads.compile_model): race and gender one-hot; age the (smoothed)
    distribution over the mode's age classes followed by the age in years, for the L1 term."""
    ages = labels["age_years"].astype(np.float32)
    distribution = smoothed_targets(ages, mode, settings.age_sigma)
    one_hot = {task: np.eye(len(names), dtype=np.float32)[labels[task]] for task, names in TASK_CLASSES.items()}
    return {"age": np.concatenate([distribution, ages[:, None]], axis=1), **one_hot}


def finetune_rate(settings: TrainParams, steps_per_epoch: int):
    """The fine-tuning phase's base learning rate: constant, or a linear warm-up then cosine decay to 0."""
    if settings.finetune_schedule == "constant":
        return settings.finetune_lr
    total = max(1, settings.finetune_epochs * steps_per_epoch)
    warmup = min(total - 1, int(round(settings.warmup_epochs * steps_per_epoch)))
    return keras.optimizers.schedules.CosineDecay(
        0.0 if warmup else settings.finetune_lr, decay_steps=total - warmup,
        warmup_target=settings.finetune_lr if warmup else None, warmup_steps=warmup)


def validation_report(model: keras.Model, split: dict, description: dict, batch_size: int) -> dict:
    """The age read-out that does best on the validation split (argml.age.choose_readout), and the validation
    metrics under it, computed as evaluate computes the test metrics: {"readout", "metrics"}."""
    probabilities = predict_cached(model, split, batch_size)
    labels = split["labels"]
    readout = choose_readout(probabilities["age"], labels["age_years"], description["mode"],
                             description["age_values"])
    chosen = {"bins": readout["bins"], "years": readout["years"]}
    rows = evaluate.row_outcomes(probabilities, {**labels, "file": labels["file_name"],
                                                 "age": labels[tfrecords.age_column(description["mode"])]},
                                 {**description, "readout": chosen})
    return {"metrics": evaluate.summary_metrics(rows), "readout": readout}


def distribution_scope(distribute: str):
    """The scope to build and train in: "mirrored" replicates the model on every local GPU (every logical
    CPU device where there is none) with tf.distribute.MirroredStrategy; "none" is Keras' default."""
    if distribute == "none":
        return contextlib.nullcontext()
    if keras.backend.backend() != "tensorflow":
        raise ValueError(f"train.distribute: {distribute} needs the TensorFlow backend, not {keras.backend.backend()}")
    import tensorflow as tf

    devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
    strategy = tf.distribute.MirroredStrategy([device.name for device in devices])
    print(f"train: MirroredStrategy over {strategy.num_replicas_in_sync} devices")
    return strategy.scope()


def train(features_dir: str | Path, model_dir: str | Path, mode: str, settings: TrainParams,
          checkpoint_dir: str | Path, log_dir: str | Path, on_epoch=None,
          describe: dict | None = None) -> tuple[pd.DataFrame, dict]:
    """Train both phases; write `model.keras` and `model.json` (classes, age values, the age read-out chosen
    on validation, the feature cache's settings, plus `describe`, e.g. the alignment) into `model_dir`;
    return the history and the validation report (see validation_report).

    A run killed part-way resumes from `checkpoint_dir` (see prepare_checkpoints): a finished heads phase is
    not redone, fine-tuning goes on from its last finished epoch, and the history holds every finished epoch
    once. `on_epoch(step, logs)` is called after every epoch, steps numbered across both phases."""
    features_dir, model_dir = Path(features_dir), Path(model_dir)
    checkpoint_dir, log_dir = Path(checkpoint_dir), Path(log_dir)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(settings.seed)
    lr_factors, loss_weights = dataclasses.asdict(settings.lr_factors), dataclasses.asdict(settings.loss_weights)
    info = features.read_info(features_dir)
    train_split = features.load_split(features_dir, "train", mode, info)
    val_split = features.load_split(features_dir, "val", mode, info)
    print(f"train[{mode}]: {len(train_split['index'])} training, {len(val_split['index'])} validation examples")
    values = age_values(train_split["labels"], mode)
    for split in (train_split, val_split):
        split["targets"] = training_targets(split["labels"], mode, settings)
    targets = {"age_values": values, "age_l1": settings.age_l1, "label_smoothing": settings.label_smoothing}
    if settings.multi_level:
        for split in (train_split, val_split):
            split["head"] = np.concatenate([split["head"], pooled_block_inputs(split)], axis=1)

    # Under MirroredStrategy an uneven last training batch fails (its replicas' gradients differ in shape):
    # full training batches only.
    replicated = settings.distribute == "mirrored"
    with distribution_scope(settings.distribute):  # variables made here are mirrored when asked
        # Phase 1: heads on the frozen backbone's cached features.
        heads = build_heads(train_split["head"].shape[1], mode, settings.hidden_units, settings.hidden_activation,
                            settings.dropout)
        # Only wrappers get compiled: nested models that carry a compile config would drag the optimizer
        # class into the saved model.
        head_input = keras.Input((train_split["head"].shape[1],), name="head_input")
        heads_model = keras.Model(head_input, heads(head_input), name="heads_only")
        heads_done = checkpoint_dir / "heads.done.weights.h5"
        if heads_done.exists():
            heads_model.load_weights(heads_done)
            print(f"train[{mode}]: resuming; the heads phase finished before ({heads_done})")
        else:
            compile_model(heads_model, settings.head_lr, lr_factors, loss_weights, **targets)
            if replicated:
                head_batches = lambda split, shuffle: CachedBatches(  # noqa: E731
                    split["head"], np.arange(len(split["head"])), split["targets"], settings.batch_size, shuffle,
                    settings.seed, drop_remainder=shuffle)  # training batches only
                data = {"x": head_batches(train_split, True), "validation_data": head_batches(val_split, False)}
            else:
                data = {"x": train_split["head"], "y": train_split["targets"], "batch_size": settings.batch_size,
                        "validation_data": (val_split["head"], val_split["targets"])}
            heads_model.fit(**data, epochs=settings.head_epochs, verbose=2,
                            callbacks=_callbacks("heads", checkpoint_dir, log_dir, settings.patience, 0, on_epoch))
            heads_model.save_weights(heads_done)
        heads_history = _phase_history(checkpoint_dir, "heads")

        # Phase 2: fine-tune from the cached block onward, with the heads.
        backbone = facenet.load_facenet(info["weights"])
        lower, upper = facenet.split(backbone, info["from_block"])
        upper_features = facenet.feature_model(upper, features.head_input_layer(info["head_input"]))
        for layer in upper_features.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.trainable = False  # the bottleneck's statistics stay those of the pretrained model
        if settings.multi_level:
            upper_features = multi_level_features(upper_features, info["lower_shape"])
        block_input = keras.Input(tuple(info["lower_shape"]), name="block_input")
        finetune_model = keras.Model(block_input, heads(upper_features(block_input)), name="finetune")
        if settings.finetune_epochs > 0:
            make = lambda split, shuffle: CachedBatches(split["lower"], split["index"], split["targets"],  # noqa: E731
                                                        settings.batch_size, shuffle, settings.seed,
                                                        drop_remainder=replicated and shuffle,
                                                        mirrored=split["mirrored"])  # None but in training
            train_batches = make(train_split, True)
            compile_model(finetune_model, finetune_rate(settings, len(train_batches)), lr_factors, loss_weights,
                          **targets)
            finetune_model.fit(train_batches, validation_data=make(val_split, False),
                               epochs=settings.finetune_epochs, verbose=2,
                               callbacks=_callbacks("finetune", checkpoint_dir, log_dir, settings.patience,
                                                    len(heads_history), on_epoch))
    history = _numbered([heads_history, _phase_history(checkpoint_dir, "finetune")])

    image = keras.Input((facenet.INPUT_SIZE, facenet.INPUT_SIZE, 3), name="image")
    model = keras.Model(image, heads(upper_features(lower(image))), name=f"argml_{mode}")
    description = {"mode": mode, "input_size": facenet.INPUT_SIZE, "tasks": list(TASKS),
                   "classes": {task: list(names) for task, names in class_names(mode).items()},
                   "age_values": values, "multi_level": settings.multi_level, **info, **(describe or {})}
    validation = validation_report(finetune_model, val_split, description, settings.batch_size)
    description["readout"] = {key: validation["readout"][key] for key in ("bins", "years")}
    print(f"train[{mode}]: age read-out {description['readout']}; validation "
          + ", ".join(f"{name} {value:.4f}" for name, value in validation["metrics"].items()))
    model_dir.mkdir(parents=True, exist_ok=True)
    model.save(model_dir / "model.keras")
    (model_dir / "model.json").write_text(json.dumps(description, indent=2) + "\n")
    shutil.rmtree(checkpoint_dir, ignore_errors=True)  # done: a later run starts afresh
    return history, validation
