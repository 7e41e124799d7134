"""LiteRT (TFLite) exports of a trained model, converted by Keras' own LiteRT exporter, TFLite built-in ops only.

- `fp32`: the model as trained;
- `int8`: dynamic-range quantization (int8 weights, activations quantized on the fly), chosen over
  full-integer quantization with a calibration set because it needs no calibration data and agreed with
  Keras more often (`python -m argml.bench quantization` measures both).
"""

from __future__ import annotations

import os
from pathlib import Path

from argml.core.files import atomic_path

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
