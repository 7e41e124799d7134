"""LiteRT (TFLite) exports of a trained model, and a classifier that runs them on the CPU (XNNPACK).

Two exports per model, both converted by Keras' own LiteRT exporter with TFLite built-in ops only:
- `fp32`: the model as trained;
- `int8`: dynamic-range quantization (int8 weights, activations quantized on the fly). Chosen over
  full-integer quantization with a calibration set by measurement: on 300 test faces it agreed with Keras
  more often (age 99.0 % vs 98.0 %, gender 100 % vs 99.0 %) at nearly the same speed (220 vs 237 faces/s at
  batch 8), and it needs no calibration data.

`LiteClassifier` answers like `argml.classifier.Classifier` (same `probabilities`, `predict`, `description`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from argml.classifier import TASKS
from argml.files import atomic_path, file_digest

KINDS = ("fp32", "int8")


def export_name(kind: str) -> str:
    return f"model.{kind}.tflite"


def export(keras_model_path: str | Path, out: str | Path, kind: str) -> Path:
    """Convert the .keras model at `keras_model_path` to a LiteRT file `out` (`kind`: fp32 or int8)."""
    import keras

    return convert(keras.saving.load_model(keras_model_path, compile=False), out, kind)


def convert(model, out: str | Path, kind: str) -> Path:
    """Convert a Keras model taking [B, S, S, 3] images to a LiteRT file `out` (`kind`: fp32 or int8)."""
    import tensorflow as tf

    if kind not in KINDS:
        raise ValueError(f"export kind must be one of {', '.join(KINDS)}, got {kind!r}")
    size = model.input_shape[1]
    settings = {"target_spec": {"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS]}}
    if kind == "int8":
        settings["optimizations"] = [tf.lite.Optimize.DEFAULT]
    out = Path(out)
    with atomic_path(out) as staging:
        tflite = staging.with_name(staging.name + ".tflite")  # Keras wants the suffix
        try:
            model.export(str(tflite), format="litert", verbose=False,
                         input_signature=[tf.TensorSpec((None, size, size, 3), tf.float32)], **settings)
            os.replace(tflite, staging)
        finally:
            tflite.unlink(missing_ok=True)
    return out


class LiteClassifier:
    """A LiteRT export of an argml model: aligned RGB faces [B, S, S, 3] 0-255 -> {task: probabilities}.
    Not thread-safe: give each thread its own."""

    def __init__(self, model_path: str | Path, description: dict | None = None, threads: int = 0,
                 sha256: str | None = None):
        from ai_edge_litert.interpreter import Interpreter

        model_path = Path(model_path)
        if not model_path.exists():
            raise FileNotFoundError(f"LiteRT model {model_path} not found")
        if sha256 is not None and file_digest(model_path, "sha256") != sha256:
            raise ValueError(f"{model_path} does not match its recorded sha256: refusing to load it")
        if description is None:
            description = json.loads(model_path.with_name("model.json").read_text())
        self.description = description
        self.input_size = int(description["input_size"])
        self.path = model_path
        self.interpreter = Interpreter(model_path=str(model_path), num_threads=threads or os.cpu_count())
        self.runner = self.interpreter.get_signature_runner("serving_default")
        [self.input_name] = self.runner.get_input_details()

    def probabilities(self, faces: np.ndarray) -> dict[str, np.ndarray]:
        """faces: [B, S, S, 3] RGB 0-255 -> {task: [B, classes]}."""
        outputs = self.runner(**{self.input_name: np.asarray(faces, dtype=np.float32)})
        return {task: np.array(values) for task, values in outputs.items()}

    def predict(self, faces: np.ndarray) -> pd.DataFrame:
        from argml.classifier import predictions_table

        return predictions_table(self.probabilities(faces), self.description)


# --- measuring an export against the Keras model ---------------------------------------------------------

def test_probabilities(classifiers: dict[str, object], dataset) -> tuple[dict[str, dict], dict[str, np.ndarray]]:
    """Every classifier on every batch of a tf.data dataset built `with_meta`:
    ({name: {task: probabilities}}, labels)."""
    probabilities: dict[str, dict[str, list]] = {name: {} for name in classifiers}
    labels: dict[str, list] = {}
    for images, targets in dataset.as_numpy_iterator():
        for name, classifier in classifiers.items():
            for task, values in classifier.probabilities(images).items():
                probabilities[name].setdefault(task, []).append(np.asarray(values))
        for key, values in targets.items():
            labels.setdefault(key, []).append(values)
    return ({name: {task: np.concatenate(parts) for task, parts in tasks.items()}
             for name, tasks in probabilities.items()},
            {key: np.concatenate(parts) for key, parts in labels.items()})


def throughput(classifier, faces: np.ndarray, batch_size: int, runs: int = 3, seconds: float = 2.0) -> list[float]:
    """Faces per second classifying batches of `batch_size` real faces, `runs` timings of about `seconds`."""
    import time

    batch = faces[np.arange(batch_size) % len(faces)]
    classifier.probabilities(batch)  # warm-up (tracing, tensor allocation)
    rates = []
    for _ in range(runs):
        done, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            classifier.probabilities(batch)
            done += batch_size
        rates.append(done / (time.perf_counter() - start))
    return rates


def deltas(export_metrics: dict[str, float], keras_metrics: dict[str, float]) -> dict[str, float]:
    return {key: export_metrics[key] - keras_metrics[key] for key in export_metrics if key in keras_metrics}


def within_tolerance(delta: dict[str, float], accuracy_points: float, mae_years: float) -> bool:
    """Each task's accuracy (9-bin age included) no more than `accuracy_points` below Keras', and the age
    MAE no more than `mae_years` above it. Gains are not penalised."""
    accuracies = ("gender.accuracy", "race.accuracy", "age.accuracy", "age.bin_accuracy")
    return (all(delta[key] >= -accuracy_points / 100 for key in accuracies)
            and delta["age.mae"] <= mae_years)


HEADLINE = ("gender.accuracy", "race.accuracy", "age.accuracy", "age.bin_accuracy", "age.mae", "age.cs5")


def measure(model_dir: str | Path, export_dir: str | Path, dataset, mode: str, batch_sizes=(1, 8), threads: int = 0,
            timing_runs: int = 3, accuracy_points: float = 0.5, mae_years: float = 0.1) -> dict:
    """The Keras model and each export on the whole test split (`dataset`, built `with_meta`): test metrics,
    deltas against Keras overall and per group, how often the labels agree with Keras', and faces/s at each
    batch size (`timing_runs` timings each, on real test faces)."""
    from argml import evaluate
    from argml.classifier import Classifier

    model_dir, export_dir = Path(model_dir), Path(export_dir)
    keras_model = Classifier(model_dir / "model.keras")
    exports = {kind: LiteClassifier(export_dir / export_name(kind), keras_model.description, threads) for kind in KINDS}
    classifiers = {"keras": keras_model, **exports}
    probabilities, labels = test_probabilities(classifiers, dataset)
    rows = {name: evaluate.row_outcomes(values, labels, keras_model.description)
            for name, values in probabilities.items()}
    groups = {name: evaluate.per_group(table, 0, 0.95).set_index(["grouping", "group", "metric"])["value"]
              for name, table in rows.items()}
    faces = next(dataset.as_numpy_iterator())[0]
    report: dict = {"test_faces": len(rows["keras"]), "threads": threads or os.cpu_count(),
                    "tolerance": {"accuracy_points": accuracy_points, "mae_years": mae_years}}
    for name, classifier in classifiers.items():
        metrics = evaluate.summary_metrics(rows[name])
        entry = {"metrics": {key: round(metrics[key], 5) for key in HEADLINE}}
        for batch_size in batch_sizes:
            rates = throughput(classifier, faces, batch_size, timing_runs)
            entry[f"faces_per_s_batch{batch_size}"] = round(float(np.median(rates)), 1)
            entry[f"faces_per_s_batch{batch_size}_runs"] = [round(rate, 1) for rate in rates]
        if name != "keras":
            delta = deltas(metrics, evaluate.summary_metrics(rows["keras"]))
            entry["delta"] = {key: round(delta[key], 5) for key in HEADLINE}
            entry["label_agreement"] = {task: round(float((rows[name][f"{task}_pred"] == rows["keras"][
                f"{task}_pred"]).mean()), 5) for task in TASKS}
            group_delta = (groups[name] - groups["keras"]).dropna()
            entry["worst_group_delta"] = {metric: round(float(values.abs().max()), 5) for metric, values in
                                          group_delta.groupby(level="metric") if metric in HEADLINE}
            entry["within_tolerance"] = within_tolerance(delta, accuracy_points, mae_years)
            entry["size_mb"] = round((export_dir / export_name(name)).stat().st_size / 1e6, 1)
        report[name] = entry
    report["size_mb_keras"] = round((model_dir / "model.keras").stat().st_size / 1e6, 1)
    return report


# --- the exports in MLflow ---------------------------------------------------------------------------------

ARTIFACT_FOLDER = "litert"


def log_exports(run_id: str, export_dir: str | Path, report_path: str | Path, model_name: str, mode: str) -> int:
    """Log the exports, their model.json and the report to the mode's run (folder `litert`), and tag the
    version registered from that run (alias `mode`) with each export's sha256 and whether it is within
    tolerance. -> the version."""
    import mlflow

    export_dir = Path(export_dir)
    client = mlflow.MlflowClient()
    version = client.get_model_version_by_alias(model_name, mode)
    if version.run_id != run_id:
        raise RuntimeError(f"{model_name}@{mode} is version {version.version} from run {version.run_id}, not this "
                           f"model's run {run_id}: run `dvc repro evaluate@{mode}` first")
    for path in (*(export_dir / export_name(kind) for kind in KINDS), export_dir / "model.json", report_path):
        client.log_artifact(run_id, str(path), ARTIFACT_FOLDER)
    report = json.loads(Path(report_path).read_text())
    tags = {f"litert_{kind}_sha256": file_digest(export_dir / export_name(kind), "sha256") for kind in KINDS}
    tags["litert_within_tolerance"] = str(report["int8"]["within_tolerance"]).lower()
    for key, value in tags.items():
        client.set_model_version_tag(model_name, version.version, key, value)
    return int(version.version)


def registered_export(uri: str, kind: str = "int8", threads: int = 0) -> LiteClassifier:
    """The `kind` export of the version a models:/ URI names, from its run's artifacts (downloaded once into
    $ARGML_CACHE/litert, checked against the version's sha256 tag on every load)."""
    import mlflow

    from argml import tracking

    tracking.configure()
    version = tracking._registered_version(uri)
    if version is None:
        raise ValueError(f"{uri}: the LiteRT backend needs a models:/NAME@ALIAS or models:/NAME/VERSION URI, "
                         "or the path of a .tflite export")
    sha256 = version.tags.get(f"litert_{kind}_sha256")
    if sha256 is None:
        raise FileNotFoundError(f"{uri} (version {version.version}) has no LiteRT export: run `dvc repro "
                                f"export@{version.tags.get('age_mode', 'MODE')}`, or use --backend keras")
    folder = Path(os.environ.get("ARGML_CACHE", Path.home() / ".cache" / "argml")) / "litert" / version.run_id
    path = folder / ARTIFACT_FOLDER / export_name(kind)
    if not path.exists() or file_digest(path, "sha256") != sha256:
        folder.mkdir(parents=True, exist_ok=True)
        mlflow.artifacts.download_artifacts(run_id=version.run_id, artifact_path=ARTIFACT_FOLDER, dst_path=str(folder))
    mismatch = tracking.local_model_mismatch(uri)
    if mismatch:
        import warnings

        warnings.warn(mismatch, stacklevel=2)
    return LiteClassifier(path, json.loads((path.with_name("model.json")).read_text()), threads, sha256=sha256)


def registered_backend(uri: str) -> str:
    """`litert` when the version a models:/ URI names has an int8 export within tolerance, else `keras`."""
    from argml import tracking

    tracking.configure()
    try:
        version = tracking._registered_version(uri)
    except Exception:  # an unknown alias: the Keras path reports it clearly
        return "keras"
    return "litert" if version is not None and version.tags.get("litert_within_tolerance") == "true" else "keras"
