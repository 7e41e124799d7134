"""One audit from start to end: resolve the model and detector once, plan the shards, run the pending ones
on an engine, write each as it finishes, then assemble the tables, write the report and log it to MLflow.

    inputs (argml.audit.sources) -> plan (argml.audit.store) -> shards on an engine (argml.audit.engines,
    argml.audit.worker) -> faces.parquet + photos.parquet -> report.json/.md/.png (argml.audit.report)
    -> an MLflow run in `argml-audits` (argml.audit.tracking)

The model's version is pinned when the audit starts (models:/NAME@ALIAS becomes models:/NAME/VERSION), so
every worker, and a resumed run, uses the same one; a resumed run with another version is refused.
"""

from __future__ import annotations

from argml.audit import worker  # first: it fixes the import order of torchvision and TensorFlow

import os  # noqa: E402
import sys  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import pandas as pd  # noqa: E402
from tqdm import tqdm  # noqa: E402

from argml.audit import answers, engines, report, sources, store  # noqa: E402
from argml.core.card import ModelCard  # noqa: E402
from argml.core.config import Params, load_params  # noqa: E402
from argml.core.files import file_digest  # noqa: E402
from argml.serving import detect, inference  # noqa: E402

DEFAULT_SHARD_SIZE = 256


@dataclass(frozen=True)
class ModelChoice:
    """The model an audit uses, resolved once on the driver."""

    uri: str  # as given
    pinned: str  # what the workers load: models:/NAME/VERSION or a file path
    backend: str
    card: ModelCard
    validation: Path  # the model's answers on its validation split
    tracking_uri: str = ""
    name: str = ""
    version: str = ""
    run_id: str = ""

    def describe(self) -> dict:
        return {"uri": self.uri, "pinned": self.pinned, "name": self.name or None, "version": self.version or None,
                "run_id": self.run_id or None, "backend": self.backend, "age_mode": self.card.mode.name}


def choose_model(model: str, backend: str, download_dir: Path, validation: str | None = None) -> ModelChoice:
    """Pin a models:/ URI to its version and fetch its card and validation answers; or a .keras/.tflite file
    with model.json and validation.npz beside it. `validation` overrides the validation answers' file."""
    if model.startswith("models:/"):
        from argml.serving import pyfunc
        from argml.tracking import registry
        from argml.tracking.runs import configure

        import mlflow

        tracking_uri = configure()
        try:
            version = registry.registered_version(model)
        except mlflow.exceptions.MlflowException as error:
            raise FileNotFoundError(f"no model {model} in {tracking_uri}: {error.message.splitlines()[0]}") from None
        if version is None:
            raise ValueError(f"{model}: give models:/NAME@ALIAS or models:/NAME/VERSION")
        pinned = f"models:/{version.name}/{version.version}"
        download_dir.mkdir(parents=True, exist_ok=True)
        card = ModelCard.load(pyfunc.artifact_file(pinned, "description", download_dir))
        found = Path(validation) if validation else pyfunc.artifact_file(pinned, "validation", download_dir)
        return ModelChoice(model, pinned, inference.choose_backend(pinned, backend), card, found, tracking_uri,
                           version.name, str(version.version), version.run_id)
    path = Path(model).expanduser().absolute()
    if inference.is_registry_uri(model):
        raise ValueError(f"{model}: audits take a models:/ URI or a .keras/.tflite file")
    if not path.exists():
        raise FileNotFoundError(f"model {path} not found")
    card = ModelCard.load(path)
    found = Path(validation) if validation else path.with_name(answers.VALIDATION_FILE)
    return ModelChoice(model, str(path), inference.choose_backend(path, backend), card, found)


@dataclass(frozen=True)
class Options:
    paths: list[str]
    out: str
    model: str = inference.DEFAULT_MODEL
    backend: str | None = None
    detector: str | None = None
    detector_sha256: str = ""
    params: str = "params.yaml"
    engine: str = "local"
    address: str | None = None
    threads_per_worker: int = 1
    shard_size: int = DEFAULT_SHARD_SIZE
    validation: str | None = None
    correction: report.Settings = report.Settings()
    mlflow: bool = True


def settings_for(options: Options, choice: ModelChoice) -> worker.AuditSettings:
    params = load_params(options.params) if Path(options.params).exists() else Params()
    live, limits = params.live, params.decode.limits()
    detector_path = detect.resolve_detector(options.detector, options.detector_sha256)
    return worker.AuditSettings(
        model=choice.pinned, backend=choice.backend, detector=str(detector_path.absolute()),
        detector_sha256=file_digest(detector_path, "sha256"), tracking_uri=choice.tracking_uri, limits=limits,
        detector_confidence=live.detector_confidence, detector_imgsz=live.detector_imgsz,
        threads=0 if options.engine == "local" else options.threads_per_worker,
        cache_dir=os.environ.get("ARGML_CACHE", ""))


def run_shards(folder: store.AuditFolder, plan: store.Plan, engine: engines.Engine) -> int:
    """Run the plan's pending shards on `engine`, writing each as it finishes; -> how many it wrote."""
    pending = folder.pending(plan)
    if not pending:
        return 0
    written = 0
    jobs = [(index, plan.shard(index)) for index in pending]
    with tqdm(total=len(plan.entries), initial=len(plan.entries) - sum(len(entries) for _, entries in jobs),
              desc=f"audit ({engine.name})", unit="photo", file=sys.stderr, mininterval=2) as progress:
        for result in engine.run(plan.settings, jobs):
            written += folder.write_shard(result)
            progress.update(result.photos.num_rows)
    return written


def audit(options: Options) -> dict:
    """Run (or resume) the audit `options` describe; -> a summary (counts, paths, the MLflow run id)."""
    out = Path(options.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; give a folder")
    if options.shard_size < 1:
        raise ValueError(f"--shard-size must be at least 1, got {options.shard_size}")
    settings_file = Path(options.params)
    backend = options.backend or inference.settings(settings_file).backend
    choice = choose_model(options.model, backend, out / "model", options.validation)
    validation = answers.load_labelled(choice.validation, choice.card)  # early: before hours of work
    if options.mlflow:
        from argml.audit import tracking

        tracking.experiment_id()  # fails now, not after the audit, when there is no store
    inputs = sources.collect(options.paths)
    plan = store.Plan(inputs.entries, inputs.duplicates, options.shard_size, settings_for(options, choice))
    folder = store.AuditFolder(out)
    folder.prepare(plan)
    engine = engines.connect(options.engine, options.address, options.threads_per_worker)
    try:
        written = run_shards(folder, plan, engine)
    finally:
        engine.close()
    faces_path, photos_path = folder.assemble(plan)
    faces, photos = pd.read_parquet(faces_path), pd.read_parquet(photos_path)
    document = report.build(faces, photos, choice.card, validation, options.correction, choice.describe(),
                            plan.duplicates)
    paths = report.write(document, out)
    run_id = None
    if options.mlflow:
        params = {"inputs": len(plan.entries), "shards": plan.shard_count, "shard_size": plan.shard_size,
                  "engine": options.engine, "methods": options.correction.methods, "rounds": options.correction.rounds,
                  "confidence": options.correction.confidence, "model": choice.pinned, "backend": choice.backend,
                  "detector_sha256": plan.settings.detector_sha256}
        run_id = tracking.log(document, paths, params, out / "run.json")
    return {"photos": document["photos"], "unreadable": [item["reason"] for item in document["unreadable"]],
            "shards": plan.shard_count, "shards_run": written,
            "faces_path": str(faces_path), "photos_path": str(photos_path), "report": [str(p) for p in paths],
            "run_id": run_id, "model": choice.describe()}
