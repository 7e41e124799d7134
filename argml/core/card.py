"""The model card, `model.json`: everything a trained model's answers depend on besides its weights.

Written beside `model.keras` by training, copied beside each LiteRT export, and logged with every registered
model. It loads, checks and saves itself here; the rest of argml reads its typed fields. The file keeps the
flat layout of earlier versions of argml, so their models still load (a card without a read-out answers
with the arg-max bins and the expected age).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from argml.core.config import AlignParams
from argml.core.errors import BadInput
from argml.core.files import atomic_path
from argml.core.labels import TASKS, AgeMode

BIN_READOUTS = ("argmax", "summed", "expected")
YEAR_READOUTS = ("mean", "median")


class CardError(BadInput):
    """A model.json that is missing, unreadable or inconsistent."""


@dataclass(frozen=True)
class Readout:
    """How the age head's probabilities become a 9-bin label and years (argml.model.age)."""

    bins: str = "argmax"
    years: str = "mean"

    def check(self, mode: AgeMode) -> None:
        if self.bins not in mode.bin_readouts:
            raise CardError(f"bin read-out {self.bins!r} does not apply to the {mode.name} mode "
                            f"(use {', '.join(mode.bin_readouts)})")
        if self.years not in YEAR_READOUTS:
            raise CardError(f"years read-out {self.years!r}: use {' or '.join(YEAR_READOUTS)}")


@dataclass(frozen=True)
class FeatureCache:
    """What the features stage cached (its info.json): where fine-tuning starts and what the heads read."""

    from_block: str
    head_input: str
    weights: str
    lower_shape: tuple[int, ...]
    examples: dict[str, int]
    mirror_train: bool = False
    precision: str = "float32"  # what the frozen layers computed in: float32 or bfloat16 (argml.model.precision)

    @classmethod
    def from_dict(cls, raw: dict) -> FeatureCache:
        return cls(raw["from_block"], raw["head_input"], raw["weights"], tuple(raw["lower_shape"]),
                   dict(raw["examples"]), bool(raw.get("mirror_train", False)), raw.get("features_precision", "float32"))

    def to_dict(self) -> dict:
        return {"from_block": self.from_block, "head_input": self.head_input, "weights": self.weights,
                "lower_shape": list(self.lower_shape), "examples": self.examples, "mirror_train": self.mirror_train,
                "features_precision": self.precision}


@dataclass(frozen=True)
class ModelCard:
    mode: AgeMode
    input_size: int  # aligned RGB faces, input_size x input_size
    age_values: tuple[float, ...]  # the age in years each age class stands for (mean training age)
    features: FeatureCache
    align: AlignParams | None  # how the training faces were aligned; None only in models older than that
    readout: Readout = field(default_factory=Readout)
    multi_level: bool = False
    precision: str = "float32"  # what fine-tuning computed in: float32 or bfloat16 (argml.model.precision)

    @property
    def classes(self) -> dict[str, tuple[str, ...]]:
        return self.mode.task_classes()

    def __post_init__(self):
        if len(self.age_values) != len(self.mode.classes):
            raise CardError(f"{len(self.age_values)} age values for the {len(self.mode.classes)} classes of the "
                            f"{self.mode.name} mode")
        self.readout.check(self.mode)

    def with_readout(self, readout: Readout) -> ModelCard:
        return dataclasses.replace(self, readout=readout)

    def to_dict(self) -> dict:
        """The JSON document, in the key order argml has always written."""
        document = {"mode": self.mode.name, "input_size": self.input_size, "tasks": list(TASKS),
                    "classes": {task: list(names) for task, names in self.classes.items()},
                    "age_values": list(self.age_values), "multi_level": self.multi_level,
                    **self.features.to_dict()}
        if self.align is not None:
            document["align"] = dataclasses.asdict(self.align)
        document["readout"] = dataclasses.asdict(self.readout)
        document["train_precision"] = self.precision
        return document

    @classmethod
    def from_dict(cls, raw: dict) -> ModelCard:
        try:
            mode = AgeMode.of(raw["mode"])
            recorded = {task: tuple(names) for task, names in raw["classes"].items()}
            if recorded != mode.task_classes():
                raise CardError(f"its classes are not those of argml's {mode.name} mode")
            align = AlignParams(**raw["align"]) if "align" in raw else None
            return cls(mode=mode, input_size=int(raw["input_size"]),
                       age_values=tuple(float(value) for value in raw["age_values"]),
                       features=FeatureCache.from_dict(raw), align=align,
                       readout=Readout(**raw.get("readout", {})), multi_level=bool(raw.get("multi_level", False)),
                       precision=raw.get("train_precision", "float32"))
        except CardError:
            raise
        except (KeyError, TypeError, ValueError) as error:
            raise CardError(f"not an argml model card ({type(error).__name__}: {error})") from None

    @classmethod
    def load(cls, path: str | Path) -> ModelCard:
        """The card at `path`, or in the folder `path`, or beside the model file `path` (its model.json)."""
        path = Path(path)
        if path.is_dir():
            path = path / "model.json"
        elif path.name != "model.json":
            path = path.with_name("model.json")
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            raise CardError(f"{path} not found: a trained model comes with its model.json") from None
        except (OSError, ValueError) as error:
            raise CardError(f"{path} is not readable JSON: {error}") from None
        try:
            return cls.from_dict(raw)
        except CardError as error:
            raise CardError(f"{path}: {error}") from None

    def save(self, path: str | Path) -> None:
        with atomic_path(path) as staging:
            staging.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
