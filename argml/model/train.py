"""Two-phase multi-task training on the cached features (argml.model.features).

Phase 1 trains the three heads on the frozen backbone's features (seconds per epoch). Phase 2 fine-tunes
FaceNet from the cached block onward together with the heads, reading the cached block inputs instead of
images, so the frozen layers never run again. Both phases: early stopping on validation loss (best weights
restored), BackupAndRestore so an interrupted run resumes at its last finished epoch, TensorBoard with
weight histograms. The result is one Keras model from aligned RGB faces (0-255) to class probabilities, and
its model card with the age read-out chosen on the validation split.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from argml.core.card import FeatureCache, ModelCard, Readout
from argml.core.config import AlignParams, TrainParams
from argml.core.errors import BadInput
from argml.core.files import atomic_dir
from argml.core.labels import TASK_CLASSES, AgeMode
from argml.model import facenet, features, precision
from argml.model.age import choose_readout, smoothed_targets
from argml.model.batches import CachedBatches, pooled_block_inputs, predict_cached
from argml.model.heads import build_heads, compile_model
from argml.model.saving import save_model


@dataclass
class TrainingData:
    """The cached training and validation splits of one age mode, with their training targets."""

    mode: AgeMode
    cache: FeatureCache
    train: dict  # features.load_split, plus "targets" (training_targets)
    val: dict
    age_values: list[float]


@dataclass
class TrainingResult:
    history: pd.DataFrame  # one row per finished epoch of both phases
    card: ModelCard  # with the read-out chosen on validation
    readout_scores: dict  # choose_readout's result: the chosen read-outs and every candidate's score
    validation: dict[str, np.ndarray]  # the saved model's probabilities on the validation split, per task
    validation_labels: dict[str, np.ndarray]  # that split's labels, as the feature cache holds them


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


def finetune_rate(settings: TrainParams, steps_per_epoch: int):
    """The fine-tuning phase's base learning rate: constant, or a linear warm-up then cosine decay to 0."""
    if settings.finetune_schedule == "constant":
        return settings.finetune_lr
    total = max(1, settings.finetune_epochs * steps_per_epoch)
    warmup = min(total - 1, int(round(settings.warmup_epochs * steps_per_epoch)))
    return keras.optimizers.schedules.CosineDecay(
        0.0 if warmup else settings.finetune_lr, decay_steps=total - warmup,
        warmup_target=settings.finetune_lr if warmup else None, warmup_steps=warmup)


def distribution_scope(distribute: str):
    """The scope to build and train in: "mirrored" replicates the model on every local GPU (every logical
    CPU device where there is none) with tf.distribute.MirroredStrategy; "none" is Keras' default."""
    if distribute == "none":
        return contextlib.nullcontext()
    if keras.backend.backend() != "tensorflow":
        raise BadInput(f"train.distribute: {distribute} needs the TensorFlow backend, not {keras.backend.backend()}")
    import tensorflow as tf

    devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
    strategy = tf.distribute.MirroredStrategy([device.name for device in devices])
    print(f"train: MirroredStrategy over {strategy.num_replicas_in_sync} devices")
    return strategy.scope()


def age_values(train_labels: dict[str, np.ndarray], mode: AgeMode) -> list[float]:
    """The age each age class stands for (mean training age of the class), for expected-age predictions."""
    frame = pd.DataFrame({"cls": train_labels[mode.label_column], "age": train_labels["age_years"]})
    means = frame.groupby("cls")["age"].mean()
    fallback = {index: float(index + 1) for index in range(len(mode.classes))}  # exact: class + 1
    return [float(means.get(index, fallback[index])) for index in range(len(mode.classes))]


def training_targets(labels: dict[str, np.ndarray], mode: AgeMode, settings: TrainParams) -> dict[str, np.ndarray]:
    """What each head learns from (see heads.compile_model): race and gender one-hot; age the (smoothed)
    distribution over the mode's age classes followed by the age in years, for the L1 term."""
    ages = labels["age_years"].astype(np.float32)
    distribution = smoothed_targets(ages, mode, settings.age_sigma)
    one_hot = {task: np.eye(len(names), dtype=np.float32)[labels[task]] for task, names in TASK_CLASSES.items()}
    return {"age": np.concatenate([distribution, ages[:, None]], axis=1), **one_hot}


def load_training_data(features_dir: str | Path, mode: AgeMode, settings: TrainParams) -> TrainingData:
    """The mode's cached splits with their targets; with `multi_level`, the heads' input also holds each
    face's block input averaged over positions."""
    cache = features.read_info(features_dir)
    train_split = features.load_split(features_dir, "train", mode, cache)
    val_split = features.load_split(features_dir, "val", mode, cache)
    print(f"train[{mode.name}]: {len(train_split['index'])} training, {len(val_split['index'])} validation examples")
    values = age_values(train_split["labels"], mode)
    for split in (train_split, val_split):
        split["targets"] = training_targets(split["labels"], mode, settings)
    if settings.multi_level:
        for split in (train_split, val_split):
            split["head"] = np.concatenate([split["head"], pooled_block_inputs(split)], axis=1)
    return TrainingData(mode, cache, train_split, val_split, values)


def _compile(model: keras.Model, learning_rate, data: TrainingData, settings: TrainParams,
             steps_per_execution: int = 1) -> None:
    compile_model(model, learning_rate, dataclasses.asdict(settings.lr_factors),
                  dataclasses.asdict(settings.loss_weights), age_values=data.age_values, age_l1=settings.age_l1,
                  label_smoothing=settings.label_smoothing, steps_per_execution=steps_per_execution)


def train_heads(heads: keras.Model, data: TrainingData, settings: TrainParams, checkpoint_dir: Path,
                log_dir: Path, on_epoch) -> pd.DataFrame:
    """Phase 1: the heads on the frozen backbone's cached features, unless a killed run finished it already.
    -> the phase's history."""
    # Only wrappers get compiled: nested models that carry a compile config would drag the optimizer
    # class into the saved model.
    head_input = keras.Input((data.train["head"].shape[1],), name="head_input")
    heads_model = keras.Model(head_input, heads(head_input), name="heads_only")
    heads_done = checkpoint_dir / "heads.done.weights.h5"
    if heads_done.exists():
        heads_model.load_weights(heads_done)
        print(f"train[{data.mode.name}]: resuming; the heads phase finished before ({heads_done})")
        return _phase_history(checkpoint_dir, "heads")
    # Several steps per call fail under MirroredStrategy with a Python batch iterator (Keras 3.15: "You must
    # feed a value for placeholder"), so a mirrored run takes one step per call.
    steps_per_execution = 1 if settings.distribute == "mirrored" else settings.steps_per_execution
    _compile(heads_model, settings.head_lr, data, settings, steps_per_execution)
    if settings.distribute == "mirrored":
        # Under MirroredStrategy an uneven last training batch fails (its replicas' gradients differ in
        # shape): full training batches only.
        head_batches = lambda split, shuffle: CachedBatches(  # noqa: E731
            split["head"], np.arange(len(split["head"])), split["targets"], settings.batch_size, shuffle,
            settings.seed, drop_remainder=shuffle)  # training batches only
        inputs = {"x": head_batches(data.train, True), "validation_data": head_batches(data.val, False)}
    else:
        inputs = {"x": data.train["head"], "y": data.train["targets"], "batch_size": settings.batch_size,
                  "validation_data": (data.val["head"], data.val["targets"])}
    heads_model.fit(**inputs, epochs=settings.head_epochs, verbose=2,
                    callbacks=_callbacks("heads", checkpoint_dir, log_dir, settings.patience, 0, on_epoch))
    heads_model.save_weights(heads_done)
    return _phase_history(checkpoint_dir, "heads")


def backbone_parts(cache: FeatureCache, multi_level: bool) -> tuple[keras.Model, keras.Model]:
    """FaceNet split where the cache was made: (its frozen lower layers, its trainable upper layers up to
    the heads' input), the bottleneck's batch-norm statistics kept as pretrained."""
    lower, upper = facenet.split(facenet.load_facenet(cache.weights), cache.from_block)
    upper_features = facenet.feature_model(upper, features.head_input_layer(cache.head_input))
    for layer in upper_features.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False  # the bottleneck's statistics stay those of the pretrained model
    if multi_level:
        upper_features = multi_level_features(upper_features, cache.lower_shape)
    return lower, upper_features


def finetune(finetune_model: keras.Model, data: TrainingData, settings: TrainParams, checkpoint_dir: Path,
             log_dir: Path, on_epoch, first_step: int, compute: str = "float32") -> pd.DataFrame:
    """Phase 2: the upper layers and the heads on the cached block inputs, going on from a killed run's
    last finished epoch, their products computed in `compute` (argml.model.precision). -> the phase's history."""
    if settings.finetune_epochs > 0:
        replicated = settings.distribute == "mirrored"
        make = lambda split, shuffle: CachedBatches(split["lower"], split["index"], split["targets"],  # noqa: E731
                                                    settings.batch_size, shuffle, settings.seed,
                                                    drop_remainder=replicated and shuffle,
                                                    mirrored=split["mirrored"])  # None but in training
        train_batches = make(data.train, True)
        _compile(finetune_model, finetune_rate(settings, len(train_batches)), data, settings)
        with precision.mixed_bfloat16(compute):
            finetune_model.fit(train_batches, validation_data=make(data.val, False),
                               epochs=settings.finetune_epochs, verbose=2,
                               callbacks=_callbacks("finetune", checkpoint_dir, log_dir, settings.patience,
                                                    first_step, on_epoch))
    return _phase_history(checkpoint_dir, "finetune")


VALIDATION_FILE = "validation.npz"  # beside model.json: the model's answers on its own validation split


def save_validation(path: Path, probabilities: dict[str, np.ndarray], labels: dict[str, np.ndarray]) -> None:
    """The model's probabilities per task on the validation split, with the faces' true labels: what its
    errors look like on faces it never trained on (audits correct collection shares with them)."""
    np.savez_compressed(path, **{f"probabilities_{task}": values.astype(np.float32)
                                 for task, values in probabilities.items()},
                        **{f"true_{key}": labels[key] for key in ("gender", "race", "age_bin", "age_class", "age_years")})


def train(features_dir: str | Path, model_dir: str | Path, mode: AgeMode, settings: TrainParams,
          checkpoint_dir: str | Path, log_dir: str | Path, on_epoch=None,
          align: AlignParams | None = None) -> TrainingResult:
    """Train both phases; write `model.keras`, its card `model.json` (the feature cache's settings, the age
    values, the read-out chosen on validation and `align`, how the faces were aligned) and its answers on the
    validation split (`validation.npz`, see save_validation) into `model_dir`.

    A run killed part-way resumes from `checkpoint_dir` (see prepare_checkpoints): a finished heads phase is
    not redone, fine-tuning goes on from its last finished epoch, and the history holds every finished epoch
    once. `on_epoch(step, logs)` is called after every epoch, steps numbered across both phases. Fine-tuning
    computes in `settings.precision` (resolved by argml.model.precision; recorded in the card); the heads
    phase, the validation answers and the saved model are float32."""
    model_dir, checkpoint_dir, log_dir = Path(model_dir), Path(checkpoint_dir), Path(log_dir)
    compute = precision.resolve(settings.precision)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(settings.seed)
    data = load_training_data(features_dir, mode, settings)
    with distribution_scope(settings.distribute):  # variables made here are mirrored when asked
        heads = build_heads(data.train["head"].shape[1], mode, settings.hidden_units, settings.hidden_activation,
                            settings.dropout)
        heads_history = train_heads(heads, data, settings, checkpoint_dir, log_dir, on_epoch)
        lower, upper_features = backbone_parts(data.cache, settings.multi_level)
        block_input = keras.Input(tuple(data.cache.lower_shape), name="block_input")
        finetune_model = keras.Model(block_input, heads(upper_features(block_input)), name="finetune")
        finetune_history = finetune(finetune_model, data, settings, checkpoint_dir, log_dir, on_epoch,
                                    len(heads_history), compute)
    history = _numbered([heads_history, finetune_history])

    image = keras.Input((facenet.INPUT_SIZE, facenet.INPUT_SIZE, 3), name="image")
    model = keras.Model(image, heads(upper_features(lower(image))), name=f"argml_{mode.name}")
    validation = predict_cached(finetune_model, data.val, settings.batch_size)
    scores = choose_readout(validation["age"], data.val["labels"]["age_years"], mode, data.age_values)
    card = ModelCard(mode=mode, input_size=facenet.INPUT_SIZE, age_values=tuple(data.age_values),
                     features=data.cache, align=align, readout=Readout(scores["bins"], scores["years"]),
                     multi_level=settings.multi_level, precision=compute)
    with atomic_dir(model_dir) as staging:  # a kill while saving leaves no half-written model
        save_model(model, staging / "model.keras")
        card.save(staging / "model.json")
        save_validation(staging / VALIDATION_FILE, validation, data.val["labels"])
    shutil.rmtree(checkpoint_dir, ignore_errors=True)  # done: a later run starts afresh
    return TrainingResult(history, card, scores, validation, data.val["labels"])
