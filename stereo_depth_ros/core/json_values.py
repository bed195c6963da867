"""Values made fit for strict JSON (reports, summaries, the training log)."""

from __future__ import annotations

import math
from pathlib import PurePath


def json_safe(value):
    """value for strict JSON: NaN and infinities as None, numpy scalars as Python numbers, paths
    as strings, dict keys as strings, tuples as lists, through nested dicts, lists and tuples."""
    if getattr(value, "ndim", None) == 0 and hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value
