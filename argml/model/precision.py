"""Mixed bfloat16 on CPUs that compute it natively: the pipeline's biggest speed lever on such machines.

TensorFlow's oneDNN build can rewrite a graph's convolutions and matrix products to bfloat16
(`auto_mixed_precision_onednn_bfloat16`, a Grappler pass): the variables, the saved model and every input and
output stay float32; only those products run in bfloat16, on AMX or AVX512-BF16 units. Where the CPU has
neither, oneDNN would emulate bfloat16 and run slower than float32, so `auto` picks bfloat16 only where the
CPU reports native support (Linux: the `avx512_bf16` or `amx_bf16` flag in /proc/cpuinfo) and float32
elsewhere. Outputs computed in bfloat16 differ from float32 ones in the last digits, so the precision that
was used is recorded with them (the feature cache's info.json, the model card, validation.json).

The setting is process-wide and read when TensorFlow first runs a function, so it is switched on just
before the work it speeds up (`mixed_bfloat16(...)`) and off after it.
"""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path

from argml.core.config import PRECISIONS
NATIVE_FLAGS = ("avx512_bf16", "amx_bf16")


@functools.cache
def native_bfloat16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether this CPU computes bfloat16 natively (AMX or AVX512-BF16), as Linux reports its flags."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return False
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return any(flag in flags for flag in NATIVE_FLAGS)


def resolve(setting: str) -> str:
    """A precision setting (auto, bfloat16 or float32) -> the precision to compute in: bfloat16 or float32."""
    if setting not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {setting!r}")
    if setting == "auto":
        return "bfloat16" if native_bfloat16() else "float32"
    return setting


def _set(enabled: bool) -> None:
    import tensorflow as tf

    tf.config.optimizer.set_experimental_options({"auto_mixed_precision_onednn_bfloat16": enabled})


@contextlib.contextmanager
def mixed_bfloat16(precision: str):
    """Within the block, functions TensorFlow builds run their products in bfloat16 when `precision` (resolved)
    is bfloat16; float32 otherwise. Only the Keras/TensorFlow backend has this pass: elsewhere it is a no-op."""
    import keras

    enabled = precision == "bfloat16" and keras.backend.backend() == "tensorflow"
    if enabled:
        _set(True)
    try:
        yield
    finally:
        if enabled:
            _set(False)
