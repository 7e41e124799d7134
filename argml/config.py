"""params.yaml -> typed, frozen settings, one dataclass per section.

Unknown sections or keys, and values of the wrong type, are errors that name the offending key: a typo in
params.yaml must not silently fall back to a default.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path

import yaml


@dataclasses.dataclass(frozen=True)
class DataParams:
    limit: int = 0  # 0 = every image; N > 0 = a stratified sample of N images (smoke runs)
    seed: int = 42  # seeds the sample and the split
    val_fraction: float = 0.1
    test_fraction: float = 0.1


@dataclasses.dataclass(frozen=True)
class DownloadParams:
    url: str = ""  # used only when ARGML_UTKFACE is unset
    sha256: str = ""  # required with url


@dataclasses.dataclass(frozen=True)
class AlignParams:
    size: int = 160  # output side in pixels (FaceNet's input)
    padding: float = 0.25  # margin around the landmark-aligned face, as a fraction of its size
    upsample: int = 0  # dlib detector upsampling; UTKFace faces are ~100-150 px, so 0 suffices
    workers: int = 2  # processes; 0 = one per CPU


@dataclasses.dataclass(frozen=True)
class AugmentParams:
    seed: int = 7
    race_target: float = 0.5  # top up each race to this fraction of the largest race (train split)
    exact_age_target: float = 0.1  # exact mode: top up each exact-age class to this fraction of the largest
    max_angle: float = 10.0  # rotation: uniform in [-max_angle, max_angle] degrees
    noise_sigma: float = 8.0  # Gaussian noise standard deviation, in 0-255 pixel units
    jpeg_quality: int = 95


@dataclasses.dataclass(frozen=True)
class TfrecordsParams:
    shard_size: int = 2000  # examples per shard


@dataclasses.dataclass(frozen=True)
class FeaturesParams:
    from_block: str = "Mixed_7a"  # fine-tuning starts at this FaceNet block; its input is cached once
    head_input: str = "pooled"  # what the heads read: pooled (1792-d) or bottleneck (512-d, before L2)
    weights: str = "casia-webface"  # or the path of facenet-pytorch's 20180402-114759-vggface2.pt
    batch_size: int = 64
    mirror_train: bool = False  # also cache every training image mirrored, for fine-tuning to pick at random


@dataclasses.dataclass(frozen=True)
class TaskWeights:
    age: float = 1.0
    race: float = 1.0
    gender: float = 1.0


@dataclasses.dataclass(frozen=True)
class LrFactors:
    age: float = 1.0
    race: float = 0.1
    gender: float = 0.1
    backbone: float = 0.01


@dataclasses.dataclass(frozen=True)
class TrainParams:
    hidden_units: int = 128  # each head: a layer of this many units, then a softmax
    hidden_activation: str = "linear"  # the report's heads are linear; "relu" makes them small MLPs
    dropout: float = 0.2  # before each head's hidden layer
    multi_level: bool = False  # the heads also see the cached block's input, averaged over its positions
    loss_weights: TaskWeights = TaskWeights()  # loss = weighted sum of the three cross-entropies
    lr_factors: LrFactors = LrFactors()  # learning rate of each group = base rate x factor
    batch_size: int = 64
    head_epochs: int = 40  # phase 1: heads on the frozen backbone (early stopping ends it sooner)
    head_lr: float = 0.001
    finetune_epochs: int = 2  # phase 2: backbone from features.from_block on, with the heads
    finetune_lr: float = 0.003
    finetune_schedule: str = "constant"  # or "cosine": linear warm-up, then cosine decay to 0 over the phase
    warmup_epochs: float = 0.0  # cosine schedule: epochs of linear warm-up from 0
    age_sigma: float = 0.0  # age targets: a Gaussian of this width in years over the age classes (0 = one-hot)
    age_l1: float = 0.0  # weight of |expected age - true age| (years) in the age loss
    label_smoothing: float = 0.0  # race and gender targets
    patience: int = 4  # early stopping on validation loss
    seed: int = 0
    distribute: str = "none"  # "mirrored": tf.distribute.MirroredStrategy over this host's GPUs (or CPUs)


@dataclasses.dataclass(frozen=True)
class EvaluateParams:
    bootstrap_rounds: int = 200  # resamples for each group's confidence interval (0 = none)
    confidence: float = 0.95
    batch_size: int = 64


@dataclasses.dataclass(frozen=True)
class MlflowParams:
    model_name: str = "argml"  # registered model name
    champion: str = "binned"  # which age mode's version gets the alias `champion`


@dataclasses.dataclass(frozen=True)
class ExportParams:
    batch_size: int = 32  # test-split batches when comparing the exports with Keras
    threads: int = 0  # LiteRT interpreter threads (0 = one per CPU)
    timing_runs: int = 3  # timings (about 2 s each) per backend and batch size
    accuracy_points: float = 0.5  # tolerance: accuracy at most this many points below Keras', per task
    mae_years: float = 0.1  # tolerance: age MAE at most this much above Keras'


@dataclasses.dataclass(frozen=True)
class DemoParams:
    people: int = 4  # test-split people in the clip (1-4)
    frames: int = 120  # clip length
    fps: float = 15.0
    seed: int = 0  # which test faces


@dataclasses.dataclass(frozen=True)
class LeakageParams:
    twin_quantile: float = 0.05  # near-twin: cosine to a training face >= this quantile of copy-to-source cosines
    batch_size: int = 256  # embedding batches, and the protocols' training batches
    examples: int = 4  # contact sheet: this many pairs from the top, just above and just below the threshold
    protocol_epochs: int = 20  # the report's protocols: at most this many epochs for each protocol's heads


@dataclasses.dataclass(frozen=True)
class LiveParams:
    detector_confidence: float = 0.5  # YOLO face confidence threshold
    detector_imgsz: int = 640  # YOLO input size (the shared int8 TFLite model is fixed at 640)
    pool_window: int = 0  # average a person's answers over all observations (0) or the last N
    forget_after: int = 15  # frames a person may be missing before their pool is reset
    classify_interval: float = 0.25  # min seconds between two classifications of one person (0 = when free)
    detector_threads: int = 0  # LiteRT threads of a .tflite detector (0 = one per CPU; Ultralytics' own: CPUs - 1)
    backend: str = "auto"  # keras, litert, or auto: the model's int8 LiteRT export where it is within tolerance
    classify_threads: int = 1  # LiteRT threads of the classifier (0 = one per CPU); YOLO needs the others


@dataclasses.dataclass(frozen=True)
class Params:
    data: DataParams = DataParams()
    download: DownloadParams = DownloadParams()
    align: AlignParams = AlignParams()
    augment: AugmentParams = AugmentParams()
    tfrecords: TfrecordsParams = TfrecordsParams()
    features: FeaturesParams = FeaturesParams()
    train: TrainParams = TrainParams()
    evaluate: EvaluateParams = EvaluateParams()
    mlflow: MlflowParams = MlflowParams()
    export: ExportParams = ExportParams()
    demo: DemoParams = DemoParams()
    leakage: LeakageParams = LeakageParams()
    live: LiveParams = LiveParams()


def _check_type(where: str, value, expected):
    if typing.get_origin(expected) in (typing.Union, types.UnionType):
        options = typing.get_args(expected)
    else:
        options = (expected,)
    if float in options and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if any(isinstance(value, option) and not (isinstance(value, bool) and option is not bool) for option in options):
        return value
    names = " or ".join(getattr(option, "__name__", str(option)) for option in options)
    raise ValueError(f"params: {where} must be {names}, got {value!r}")


# Allowed values of numeric and string settings: checked where params are loaded, so a bad value stops
# `dvc repro` in the `params` stage, before any stage's outputs are removed. (low, high): inclusive bounds,
# None = open.
RANGES = {
    "data.limit": (0, None), "data.val_fraction": (0.01, 0.5), "data.test_fraction": (0.01, 0.5),
    "align.size": (32, 1024), "align.padding": (0.0, 1.0), "align.upsample": (0, 3), "align.workers": (0, 256),
    "augment.race_target": (0.0, 1.0), "augment.exact_age_target": (0.0, 1.0), "augment.max_angle": (0.0, 90.0),
    "augment.noise_sigma": (0.0, 128.0), "augment.jpeg_quality": (1, 100),
    "tfrecords.shard_size": (1, None), "features.batch_size": (1, 4096),
    "leakage.twin_quantile": (0.0, 1.0), "leakage.batch_size": (1, 4096), "leakage.examples": (1, 32),
    "leakage.protocol_epochs": (1, 1000),
    "train.hidden_units": (1, 65536), "train.dropout": (0.0, 0.95), "train.batch_size": (1, 4096),
    "train.head_epochs": (0, 10000), "train.head_lr": (1e-8, 1.0), "train.finetune_epochs": (0, 10000),
    "train.finetune_lr": (1e-8, 1.0), "train.patience": (1, 10000), "train.warmup_epochs": (0.0, 10000.0),
    "train.age_sigma": (0.0, 30.0), "train.age_l1": (0.0, 100.0), "train.label_smoothing": (0.0, 0.5),
    "train.loss_weights.age": (0.0, None), "train.loss_weights.race": (0.0, None),
    "train.loss_weights.gender": (0.0, None), "train.lr_factors.age": (0.0, None),
    "train.lr_factors.race": (0.0, None), "train.lr_factors.gender": (0.0, None),
    "train.lr_factors.backbone": (0.0, None),
    "evaluate.bootstrap_rounds": (0, 100000), "evaluate.confidence": (0.5, 0.999), "evaluate.batch_size": (1, 4096),
    "live.detector_confidence": (0.01, 1.0), "live.detector_imgsz": (32, 4096), "live.pool_window": (0, None),
    "live.forget_after": (1, None), "live.classify_interval": (0.0, 60.0), "live.classify_threads": (0, 256),
    "live.detector_threads": (0, 256),
    "export.batch_size": (1, 4096), "export.threads": (0, 256), "export.timing_runs": (1, 100),
    "export.accuracy_points": (0.0, 100.0), "export.mae_years": (0.0, None),
    "demo.people": (1, 4), "demo.frames": (10, 100000), "demo.fps": (1.0, 240.0),
}
CHOICES = {
    "features.head_input": ("pooled", "bottleneck"),
    "train.hidden_activation": ("linear", "relu"),
    "train.distribute": ("none", "mirrored"),
    "train.finetune_schedule": ("constant", "cosine"),
    "mlflow.champion": ("binned", "exact"),
    "live.backend": ("auto", "keras", "litert"),
}


def _check_value(where: str, value):
    if where in RANGES:
        low, high = RANGES[where]
        if (low is not None and value < low) or (high is not None and value > high):
            bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
            raise ValueError(f"params: {where} must be {bounds}, got {value!r}")
    if where in CHOICES and value not in CHOICES[where]:
        raise ValueError(f"params: {where} must be one of {', '.join(CHOICES[where])}, got {value!r}")
    return value


def _build(cls, raw: dict | None, where: str):
    if raw is None:
        return cls()
    if not isinstance(raw, dict):
        raise ValueError(f"params: section {where!r} must be a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    known = {field.name for field in dataclasses.fields(cls)}
    key = (lambda name: f"{where}.{name}") if where else (lambda name: name)
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ValueError(f"params: unknown key(s) {', '.join(map(key, unknown))}; known: {sorted(known)}")
    values = {}
    for name, value in raw.items():
        expected = hints[name]
        if dataclasses.is_dataclass(expected):
            values[name] = _build(expected, value, key(name))
        else:
            values[name] = _check_value(key(name), _check_type(key(name), value, expected))
    return cls(**values)


def load_params(path: str | Path = "params.yaml") -> Params:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"params file {path} not found; run from the repository root")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ValueError(f"params: {path} is not valid YAML: {error}") from error
    if raw is not None and not isinstance(raw, dict):
        raise ValueError(f"params: {path} must be a mapping of sections, got {type(raw).__name__}")
    params = _build(Params, raw or {}, "")
    if params.data.val_fraction + params.data.test_fraction >= 0.9:
        raise ValueError("params: data.val_fraction + data.test_fraction must leave at least 10 % for training")
    return params


def flatten(params: Params) -> dict[str, object]:
    """{'align.size': 160, ...}: the form MLflow and `dvc params diff` show."""
    flat = {}

    def walk(prefix: str, value):
        if dataclasses.is_dataclass(value):
            for field in dataclasses.fields(value):
                walk(f"{prefix}.{field.name}" if prefix else field.name, getattr(value, field.name))
        else:
            flat[prefix] = value

    walk("", params)
    return flat


def check_params(path: str | Path = "params.yaml") -> Params:
    """load_params plus the checks that need other modules: the FaceNet block exists, a weights path exists."""
    params = load_params(path)
    from argml import facenet  # imports Keras: only here, not for every load

    facenet.block_index(params.features.from_block)  # ValueError naming the known blocks
    weights = params.features.weights
    if weights != facenet.CASIA_WEBFACE and not Path(weights).expanduser().is_file():
        raise ValueError(f"params: features.weights must be {facenet.CASIA_WEBFACE!r} or an existing "
                         f".pt file, got {weights!r}")
    return params
