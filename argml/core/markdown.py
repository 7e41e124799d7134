"""Markdown as the docs print figures: tables, percentages, intervals and counts.

Used by the generated parts of the docs (argml.pipeline.docs) and by the model cards
(argml.evaluation.model_card), so a figure reads the same wherever it appears.
"""

from __future__ import annotations

import math


def table(header: list[str], rows: list[list[object]]) -> str:
    """A Markdown table; `|` inside a cell is escaped."""
    lines = [header, ["---"] * len(header), *rows]
    return "\n".join("| " + " | ".join(str(cell).replace("|", "\\|") for cell in line) + " |" for line in lines)


def percent(value: float | None, digits: int = 1) -> str:
    """0.9406 -> '94.1 %'; None or NaN -> '–'."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{100 * value:.{digits}f} %"


def number(value: float | None, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:,.{digits}f}"


def count(value: int) -> str:
    """23056 -> '23,056'."""
    return f"{int(value):,}"


def interval(low: float | None, high: float | None, scale: float = 100, digits: int = 1) -> str:
    """A confidence interval as '[93.1, 95.0]' (scaled: percentages by default); '' when there is none."""
    if low is None or high is None or math.isnan(low) or math.isnan(high):
        return ""
    return f"[{scale * low:.{digits}f}, {scale * high:.{digits}f}]"
