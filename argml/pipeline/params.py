"""The params stage's check: all of params.yaml, including what needs the model code (FaceNet's block names,
a weights file), before any other stage runs."""

from __future__ import annotations

from pathlib import Path

from argml.core.config import Params, ParamsError, load_params


def check_params(path: str | Path = "params.yaml") -> Params:
    """load_params plus the checks that need other modules: the FaceNet block exists, a weights path exists."""
    params = load_params(path)
    from argml.model.blocks import CASIA_WEBFACE, block_index

    block_index(params.features.from_block)  # ValueError naming the known blocks
    weights = params.features.weights
    if weights != CASIA_WEBFACE and not Path(weights).expanduser().is_file():
        raise ParamsError(f"params: features.weights must be {CASIA_WEBFACE!r} or an existing "
                         f".pt file, got {weights!r}")
    return params
