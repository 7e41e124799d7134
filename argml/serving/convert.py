"""LiteRT (TFLite) exports of a trained model, converted by Keras' own LiteRT exporter, TFLite built-in ops only.

- `fp32`: the model as trained;
- `int8`: dynamic-range quantization (int8 weights, activations quantized on the fly), chosen over
  full-integer quantization with a calibration set because it needs no calibration data and agreed with
  Keras more often (`argml bench quantization` measures both);
- `int8-full` (not exported by the pipeline; for that measurement): full-integer quantization, int8 weights and
  activations with ranges calibrated on `calibration` batches (float input and output kept).
"""

from __future__ import annotations

import os
from pathlib import Path

from argml.core.errors import BadInput
from argml.core.files import atomic_path

KINDS = ("fp32", "int8")  # what the export stage writes and registers
QUANTIZATIONS = (*KINDS, "int8-full")  # what `convert` can make


def export_name(kind: str) -> str:
    return f"model.{kind}.tflite"


def export(keras_model_path: str | Path, out: str | Path, kind: str, calibration=None) -> Path:
    """Convert the .keras model at `keras_model_path` to a LiteRT file `out` (`kind`: see `convert`)."""
    import keras

    try:
        model = keras.saving.load_model(keras_model_path, compile=False)
    except Exception as error:  # noqa: BLE001 - Keras raises many kinds for a file it will not load
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise BadInput(f"model {keras_model_path} could not be loaded by Keras (refused or damaged: {first})") from error
    return convert(model, out, kind, calibration)


def convert(model, out: str | Path, kind: str, calibration=None) -> Path:
    """Convert a Keras model taking [B, S, S, 3] images to a LiteRT file `out` (`kind`: one of QUANTIZATIONS).
    `calibration` (int8-full only): an iterable of float32 image batches [B, S, S, 3], 0-255, from training data."""
    import tensorflow as tf

    if kind not in QUANTIZATIONS:
        raise BadInput(f"export kind must be one of {', '.join(QUANTIZATIONS)}, got {kind!r}")
    size = model.input_shape[1]
    settings = {"target_spec": {"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS]}}
    if kind in ("int8", "int8-full"):
        settings["optimizations"] = [tf.lite.Optimize.DEFAULT]
    if kind == "int8-full":
        if calibration is None:
            raise BadInput("int8-full quantization needs calibration images")
        batches = list(calibration)
        settings["target_spec"] = {"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]}
        settings["representative_dataset"] = lambda: ([batch[i:i + 1]] for batch in batches for i in range(len(batch)))
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
