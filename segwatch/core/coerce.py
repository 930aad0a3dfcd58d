"""Lenient readers for event fields: events come from other processes (and, replayed, from
files), so a field may be missing, null, a bool, a string or garbage; these never raise."""
from __future__ import annotations

from typing import Any

from ..protocol import as_float


def fint(v: Any) -> int | None:
    """An int, or None for null, bools and anything that is not a number."""
    if v is None or isinstance(v, bool):
        return None
    try:
        return int(v)
    except (TypeError, ValueError):
        return None


def ffloat(v: Any) -> float | None:
    """A float (NaN/Inf sent as strings decoded), or None for anything that is not a number."""
    try:
        return as_float(v)
    except Exception:
        return None
