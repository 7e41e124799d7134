"""The per-shard function every engine runs: a shard of photos -> one row per face and one row per photo.

`audit_shard(settings, shard)` decodes each photo (argml.audit.sources, with the `decode` limits), finds its
faces with the YOLO face detector, aligns them as the model's training data was aligned, classifies the
shard's faces in batches and returns two tables:

- faces: file, face, box (x1, y1, x2, y2), detector_confidence, per task the label, its probability and the
  distribution, age_bin and age_years (argml.serving.inference / argml.model.answers);
- photos: file, status ("faces", "no_face" or "unreadable"), faces, problem (why it was unreadable).

A photo that cannot be decoded or processed is a row of `photos` with its reason; it never stops the shard.
The detector and classifier are built once per worker process (`auditor`) and reused for every shard it runs.
It returns its tables and writes nothing: the engine's driver writes each shard once (argml.audit.store).
"""

from __future__ import annotations

from argml.serving import inference  # first: it fixes the import order of torchvision and TensorFlow

import os  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pyarrow as pa  # noqa: E402

from argml.audit import sources  # noqa: E402
from argml.core import images  # noqa: E402
from argml.core.config import LiveParams  # noqa: E402
from argml.core.labels import TASKS  # noqa: E402

STATUSES = ("faces", "no_face", "unreadable")


def _faces_schema() -> pa.Schema:
    """The faces table's columns (argml.serving.inference's box columns, then argml.model.answers' per task)."""
    columns = [("file", pa.string()), ("face", pa.int64())]
    columns += [(name, pa.float64()) for name in inference.BOX_COLUMNS[1:]]
    for task in TASKS:
        columns += [(task, pa.string()), (f"{task}_probability", pa.float64()),
                    (f"{task}_probabilities", pa.list_(pa.float64()))]
    return pa.schema(columns + [("age_bin", pa.string()), ("age_years", pa.float64())])


FACES_SCHEMA = _faces_schema()
PHOTOS_SCHEMA = pa.schema([("file", pa.string()), ("status", pa.string()), ("faces", pa.int64()),
                           ("problem", pa.string())])


@dataclass(frozen=True)
class AuditSettings:
    """Everything a worker needs to audit a shard exactly as the driver would: all of it resolved on the
    driver (a pinned model version, a detector file checked against its sha256), nothing read from the
    worker's own environment or working folder."""

    model: str  # models:/NAME/VERSION, or the path of a .keras file or .tflite export
    backend: str  # keras or litert
    detector: str  # the YOLO face model file
    detector_sha256: str
    tracking_uri: str = ""  # where a models:/ URI resolves (MLflow); "" for a file
    limits: images.Limits = images.Limits()
    detector_confidence: float = LiveParams.detector_confidence
    detector_imgsz: int = LiveParams.detector_imgsz
    threads: int = 0  # runtime threads of the detector and the classifier (0 = one per CPU)
    batch_size: int = 64  # faces per classifier call
    cache_dir: str = field(default="", compare=False)  # $ARGML_CACHE for the worker ("" = its own)


@dataclass
class ShardResult:
    index: int
    faces: pa.Table  # FACES_SCHEMA
    photos: pa.Table  # PHOTOS_SCHEMA


class Auditor:
    """The detector and the classifier of one worker process."""

    def __init__(self, settings: AuditSettings):
        if settings.tracking_uri:
            os.environ["MLFLOW_TRACKING_URI"] = settings.tracking_uri
        if settings.cache_dir:
            os.environ.setdefault("ARGML_CACHE", settings.cache_dir)
        live = LiveParams(detector_confidence=settings.detector_confidence, detector_imgsz=settings.detector_imgsz,
                          detector_threads=settings.threads)
        self.detector = inference.open_detector(live, settings.detector, settings.detector_sha256)
        self.classifier = inference.FaceClassifier(settings.model, settings.backend, settings.threads)
        self.settings = settings


_auditors: dict[AuditSettings, Auditor] = {}


def auditor(settings: AuditSettings) -> Auditor:
    """This process's Auditor for `settings` (built on first use: loading the models takes seconds)."""
    if settings not in _auditors:
        _auditors.clear()
        _auditors[settings] = Auditor(settings)
    return _auditors[settings]


def _photo(entry: str, status: str, faces: int = 0, problem: str = "") -> dict:
    return {"file": entry, "status": status, "faces": faces, "problem": problem}


def _find_faces(work: Auditor, entry: str):
    """(photo row, boxes and aligned faces) of one entry; a problem becomes the photo row's reason."""
    import cv2

    try:
        image = sources.read(entry, work.settings.limits)
    except images.ImageError as error:
        return _photo(entry, "unreadable", problem=str(error)), [], []
    try:
        found = work.detector.detect(image)
        chips = work.classifier.align(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), [face.box for face in found]) \
            if found else []
    except (ValueError, RuntimeError, cv2.error) as error:  # a decodable photo the detector or dlib refuses
        return _photo(entry, "unreadable", problem=f"{entry}: could not be processed ({error})"), [], []
    return _photo(entry, "faces" if found else "no_face", len(found)), found, list(chips)


def audit_shard(settings: AuditSettings, index: int, entries: list[str]) -> ShardResult:
    """Audit one shard of entries (see the module docstring)."""
    work = auditor(settings)
    photos, boxes, chips = [], [], []
    for entry in entries:
        photo, found, aligned = _find_faces(work, entry)
        photos.append(photo)
        boxes += [{"file": entry, "face": number, **dict(zip(inference.BOX_COLUMNS[1:5], (round(v, 1) for v in face.box))),
                   "detector_confidence": round(face.confidence, 4)} for number, face in enumerate(found)]
        chips += aligned
    answers = [work.classifier.classifier.predict(np.stack(chips[start:start + settings.batch_size]))
               for start in range(0, len(chips), settings.batch_size)]
    if answers:
        faces = pd.concat([pd.DataFrame(boxes), pd.concat(answers, ignore_index=True)], axis=1)
        faces = pa.Table.from_pandas(faces[FACES_SCHEMA.names], schema=FACES_SCHEMA, preserve_index=False)
    else:
        faces = FACES_SCHEMA.empty_table()
    photos = pa.Table.from_pandas(pd.DataFrame(photos, columns=PHOTOS_SCHEMA.names), schema=PHOTOS_SCHEMA,
                                  preserve_index=False)
    return ShardResult(index, faces, photos)
