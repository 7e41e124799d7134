"""params.yaml -> typed, frozen settings, one dataclass per section.

Unknown sections or keys, values of the wrong type and values outside a setting's range or choices are
errors that name the offending key: a typo in params.yaml must not silently fall back to a default. Each
setting's range or choices stand beside it (`setting(...)`).
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from pathlib import Path

import yaml

from argml.core import images
from argml.core.errors import BadInput
from argml.core.labels import AGE_MODES

PRECISIONS = ("auto", "bfloat16", "float32")  # argml.model.precision: auto = bfloat16 where the CPU has it
BACKENDS = ("auto", "keras", "litert")  # the classifier's runtime: auto = the int8 LiteRT export where within tolerance


class ParamsError(BadInput):
    """params.yaml, or a value in it, that argml refuses; the message names the key."""


def setting(default, low=None, high=None, choices: tuple | None = None):
    """A settings field with its allowed values: inclusive bounds (None = open), or a tuple of choices."""
    return dataclasses.field(default=default, metadata={"low": low, "high": high, "choices": choices})


@dataclasses.dataclass(frozen=True)
class DataParams:
    limit: int = setting(0, low=0)  # 0 = every image; N > 0 = a stratified sample of N images (smoke runs)
    seed: int = 42  # seeds the sample and the split
    val_fraction: float = setting(0.1, 0.01, 0.5)
    test_fraction: float = setting(0.1, 0.01, 0.5)


@dataclasses.dataclass(frozen=True)
class DownloadParams:
    url: str = ""  # used only when ARGML_UTKFACE is unset
    sha256: str = ""  # required with url


@dataclasses.dataclass(frozen=True)
class AlignParams:
    size: int = setting(160, 32, 1024)  # output side in pixels (FaceNet's input)
    padding: float = setting(0.25, 0.0, 1.0)  # margin around the landmark-aligned face, as a fraction of its size
    upsample: int = setting(0, 0, 3)  # dlib detector upsampling; UTKFace faces are ~100-150 px, so 0 suffices
    workers: int = setting(2, 0, 256)  # processes; 0 = one per CPU


@dataclasses.dataclass(frozen=True)
class AugmentParams:
    seed: int = 7
    race_target: float = setting(0.5, 0.0, 1.0)  # top up each race to this fraction of the largest race (train)
    exact_age_target: float = setting(0.1, 0.0, 1.0)  # exact mode: top up each exact-age class likewise
    max_angle: float = setting(10.0, 0.0, 90.0)  # rotation: uniform in [-max_angle, max_angle] degrees
    noise_sigma: float = setting(8.0, 0.0, 128.0)  # Gaussian noise standard deviation, in 0-255 pixel units
    jpeg_quality: int = setting(95, 1, 100)


@dataclasses.dataclass(frozen=True)
class TfrecordsParams:
    shard_size: int = setting(2000, low=1)  # examples per shard


@dataclasses.dataclass(frozen=True)
class FeaturesParams:
    from_block: str = "Mixed_7a"  # fine-tuning starts at this FaceNet block; its input is cached once
    # what the heads read: pooled (1792-d) or bottleneck (512-d, before L2)
    head_input: str = setting("pooled", choices=("pooled", "bottleneck"))
    weights: str = "casia-webface"  # or the path of facenet-pytorch's 20180402-114759-vggface2.pt
    batch_size: int = setting(64, 1, 4096)
    mirror_train: bool = False  # also cache every training image mirrored, for fine-tuning to pick at random
    # the frozen layers' pass: bfloat16 products (auto: where the CPU has them natively), see argml.model.precision
    precision: str = setting("auto", choices=PRECISIONS)


@dataclasses.dataclass(frozen=True)
class TaskWeights:
    age: float = setting(1.0, low=0.0)
    race: float = setting(1.0, low=0.0)
    gender: float = setting(1.0, low=0.0)


@dataclasses.dataclass(frozen=True)
class LrFactors:
    age: float = setting(1.0, low=0.0)
    race: float = setting(0.1, low=0.0)
    gender: float = setting(0.1, low=0.0)
    backbone: float = setting(0.01, low=0.0)


@dataclasses.dataclass(frozen=True)
class TrainParams:
    hidden_units: int = setting(128, 1, 65536)  # each head: a layer of this many units, then a softmax
    # the report's heads are linear; "relu" makes them small MLPs
    hidden_activation: str = setting("linear", choices=("linear", "relu"))
    dropout: float = setting(0.2, 0.0, 0.95)  # before each head's hidden layer
    multi_level: bool = False  # the heads also see the cached block's input, averaged over its positions
    loss_weights: TaskWeights = TaskWeights()  # loss = weighted sum of the three cross-entropies
    lr_factors: LrFactors = LrFactors()  # learning rate of each group = base rate x factor
    batch_size: int = setting(64, 1, 4096)
    head_epochs: int = setting(40, 0, 10000)  # phase 1: heads on the frozen backbone (early stopping ends it sooner)
    head_lr: float = setting(0.001, 1e-8, 1.0)
    finetune_epochs: int = setting(2, 0, 10000)  # phase 2: backbone from features.from_block on, with the heads
    finetune_lr: float = setting(0.003, 1e-8, 1.0)
    # or "cosine": linear warm-up, then cosine decay to 0 over the phase
    finetune_schedule: str = setting("constant", choices=("constant", "cosine"))
    warmup_epochs: float = setting(0.0, 0.0, 10000.0)  # cosine schedule: epochs of linear warm-up from 0
    age_sigma: float = setting(0.0, 0.0, 30.0)  # age targets: a Gaussian this wide (years) over the classes (0 = one-hot)
    age_l1: float = setting(0.0, 0.0, 100.0)  # weight of |expected age - true age| (years) in the age loss
    label_smoothing: float = setting(0.0, 0.0, 0.5)  # race and gender targets
    patience: int = setting(4, 1, 10000)  # early stopping on validation loss
    seed: int = 0
    # "mirrored": tf.distribute.MirroredStrategy over this host's GPUs (or CPUs)
    distribute: str = setting("none", choices=("none", "mirrored"))
    # heads phase: training steps per call into TensorFlow (the same steps and results, less Python per step)
    steps_per_execution: int = setting(64, 1, 100000)
    # fine-tuning's products in bfloat16 (auto: where the CPU has them natively), see argml.model.precision
    precision: str = setting("auto", choices=PRECISIONS)


@dataclasses.dataclass(frozen=True)
class EvaluateParams:
    bootstrap_rounds: int = setting(200, 0, 100000)  # resamples for each group's confidence interval (0 = none)
    confidence: float = setting(0.95, 0.5, 0.999)
    batch_size: int = setting(64, 1, 4096)


@dataclasses.dataclass(frozen=True)
class MlflowParams:
    model_name: str = "argml"  # registered model name
    champion: str = setting("binned", choices=tuple(AGE_MODES))  # the age mode whose version gets `champion`


@dataclasses.dataclass(frozen=True)
class ExportParams:
    batch_size: int = setting(32, 1, 4096)  # test-split batches when comparing the exports with Keras
    threads: int = setting(0, 0, 256)  # LiteRT interpreter threads (0 = one per CPU)
    accuracy_points: float = setting(0.5, 0.0, 100.0)  # tolerance: accuracy at most this many points below Keras'
    mae_years: float = setting(0.1, low=0.0)  # tolerance: age MAE at most this much above Keras'


@dataclasses.dataclass(frozen=True)
class DemoParams:
    people: int = setting(4, 1, 4)  # test-split people in the clip
    frames: int = setting(120, 10, 100000)  # clip length
    fps: float = setting(15.0, 1.0, 240.0)
    seed: int = 0  # which test faces


@dataclasses.dataclass(frozen=True)
class LeakageParams:
    # near-twin: cosine to a training face >= this quantile of copy-to-source cosines
    twin_quantile: float = setting(0.05, 0.0, 1.0)
    batch_size: int = setting(256, 1, 4096)  # embedding batches, and the protocols' training batches
    examples: int = setting(4, 1, 32)  # contact sheet: this many pairs from the top, just above and just below
    protocol_epochs: int = setting(20, 1, 1000)  # the report's protocols: at most this many epochs for the heads


@dataclasses.dataclass(frozen=True)
class LiveParams:
    detector_confidence: float = setting(0.5, 0.01, 1.0)  # YOLO face confidence threshold
    detector_imgsz: int = setting(640, 32, 4096)  # YOLO input size (the shared int8 TFLite model is fixed at 640)
    pool_window: int = setting(0, low=0)  # average a person's answers over all observations (0) or the last N
    forget_after: int = setting(15, low=1)  # frames a person may be missing before their pool is reset
    classify_interval: float = setting(0.25, 0.0, 60.0)  # min seconds between two classifications of one person
    # LiteRT threads of a .tflite detector (0 = one per CPU; Ultralytics' own: CPUs - 1)
    detector_threads: int = setting(0, 0, 256)
    backend: str = setting("auto", choices=BACKENDS)  # keras, litert, or auto (see BACKENDS)
    classify_threads: int = setting(1, 0, 256)  # LiteRT threads of the classifier (0 = one per CPU)


@dataclasses.dataclass(frozen=True)
class DecodeParams:
    """Every image argml decodes from outside (predict, the photo model, live's files, audits, the dataset)."""

    # width x height, read from the header before decoding; at most Pillow's and OpenCV's own ceiling
    max_pixels: int = setting(images.DEFAULT_MAX_PIXELS, 1, images.MAX_PIXELS_CEILING)
    max_bytes: int = setting(images.DEFAULT_MAX_BYTES, 1, 2**31)  # the encoded file

    def limits(self) -> images.Limits:
        return images.Limits(self.max_pixels, self.max_bytes)


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
    decode: DecodeParams = DecodeParams()


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
    raise ParamsError(f"params: {where} must be {names}, got {value!r}")


def _check_value(where: str, value, rule: typing.Mapping):
    low, high, choices = rule.get("low"), rule.get("high"), rule.get("choices")
    if isinstance(value, float) and not math.isfinite(value):  # NaN passes every comparison
        raise ParamsError(f"params: {where} must be a finite number, got {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise ParamsError(f"params: {where} must be {bounds}, got {value!r}")
    if choices is not None and value not in choices:
        raise ParamsError(f"params: {where} must be one of {', '.join(choices)}, got {value!r}")
    return value


def _build(cls, raw: dict | None, where: str):
    if raw is None:
        return cls()
    if not isinstance(raw, dict):
        raise ParamsError(f"params: section {where!r} must be a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = {field.name: field for field in dataclasses.fields(cls)}
    key = (lambda name: f"{where}.{name}") if where else (lambda name: name)
    unknown = sorted(set(raw) - set(fields), key=str)
    if unknown:
        raise ParamsError(f"params: unknown key(s) {', '.join(map(key, map(str, unknown)))}; known: {sorted(fields)}")
    values = {}
    for name, value in raw.items():
        expected = hints[name]
        if dataclasses.is_dataclass(expected):
            values[name] = _build(expected, value, key(name))
        else:
            values[name] = _check_value(key(name), _check_type(key(name), value, expected), fields[name].metadata)
    return cls(**values)


def _rules(cls=Params, prefix: str = "") -> dict[str, typing.Mapping]:
    """{dotted name: field metadata} for every leaf setting."""
    rules = {}
    for field in dataclasses.fields(cls):
        name = f"{prefix}{field.name}"
        if dataclasses.is_dataclass(field.type if not isinstance(field.type, str) else typing.get_type_hints(cls)[
                field.name]):
            rules.update(_rules(typing.get_type_hints(cls)[field.name], f"{name}."))
        else:
            rules[name] = field.metadata
    return rules


# Views of the rules beside the fields, by dotted name: (low, high) bounds and the allowed choices.
RANGES = {name: (rule["low"], rule["high"]) for name, rule in _rules().items()
          if rule.get("low") is not None or rule.get("high") is not None}
CHOICES = {name: rule["choices"] for name, rule in _rules().items() if rule.get("choices") is not None}


def load_params(path: str | Path = "params.yaml") -> Params:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"params file {path} not found; run from the repository root")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ParamsError(f"params: {path} is not valid YAML: {error}") from error
    if raw is not None and not isinstance(raw, dict):
        raise ParamsError(f"params: {path} must be a mapping of sections, got {type(raw).__name__}")
    params = _build(Params, raw or {}, "")
    if params.data.val_fraction + params.data.test_fraction >= 0.9:
        raise ParamsError("params: data.val_fraction + data.test_fraction must leave at least 10 % for training")
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
