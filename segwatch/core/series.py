"""Bounded ring buffers of ``(step, value)`` pairs, and ``Reading``: one value with its step.

RunState keeps every per-step quantity (loss, gradient norm, learning rate, ...) in a
``Series``: appending is O(1), memory is fixed by ``capacity``, and viewers get numpy
arrays in chronological order. Besides the recent pairs, a Series keeps a thinned copy of
the whole history (``span()``), so that a plot of a 200k-step run shows it start to end.
numpy + stdlib only.
"""
from __future__ import annotations

import math
from typing import Any, Iterator, NamedTuple

import numpy as np


class Reading(NamedTuple):
    """A value as it was measured: the value, the training step it was measured at, and
    the probe that measured it (its sampling interval says how soon it goes stale).
    A tuple: made for every event ingested, it must be cheap."""

    value: Any
    step: int
    probe: str = ""


class Series:
    """A fixed-capacity ring buffer of ``(step, value)``; the oldest pairs fall off.

    ``total`` counts every value ever appended (also those that fell off). ``span()`` gives
    the whole history thinned to at most ``span_capacity`` older pairs plus the kept ones:
    every ``stride``-th pair is copied aside, and when that copy is full every other pair of
    it is dropped and the stride doubles (fixed memory, start to end at any run length).
    """

    __slots__ = ("capacity", "_steps", "_values", "_next", "_len", "total", "name",
                 "_span_cap", "_span_steps", "_span_values", "_span_len", "_stride")

    def __init__(self, capacity: int = 4096, name: str = "", span_capacity: int = 1024) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.capacity = int(capacity)
        self.name = name
        self._steps = np.zeros(self.capacity, dtype=np.int64)
        self._values = np.full(self.capacity, np.nan, dtype=np.float64)
        self._next = 0
        self._len = 0
        self.total = 0
        self._span_cap = max(2, int(span_capacity) // 2 * 2)
        self._span_steps = np.zeros(self._span_cap, dtype=np.int64)
        self._span_values = np.full(self._span_cap, np.nan, dtype=np.float64)
        self._span_len = 0
        self._stride = 1

    def append(self, step: int, value: float | None) -> None:
        """Add one pair. ``None`` is stored as NaN."""
        i = self._next
        self._steps[i] = step
        self._values[i] = math.nan if value is None else value
        i += 1
        self._next = 0 if i == self.capacity else i
        if self._len < self.capacity:
            self._len += 1
        if self.total % self._stride == 0:
            self._keep_for_span(step, value)
        self.total += 1

    def _keep_for_span(self, step: int, value: float | None) -> None:
        if self._span_len == self._span_cap:
            # full: keep every other pair (the first one stays: the run's start is shown)
            half = self._span_cap // 2
            self._span_steps[:half] = self._span_steps[0::2]
            self._span_values[:half] = self._span_values[0::2]
            self._span_len = half
            self._stride *= 2
            if self.total % self._stride:
                return
        i = self._span_len
        self._span_steps[i] = step
        self._span_values[i] = math.nan if value is None else value
        self._span_len += 1

    def span(self) -> tuple[np.ndarray, np.ndarray]:
        """(steps, values) over the whole run, oldest first: the thinned pairs older than the
        kept ones, then every kept pair. A plot of this spans the run start to end."""
        steps, values = self.steps(), self.values()
        if self.total <= self._len or not self._span_len:
            return steps, values
        first = steps[0] if len(steps) else np.iinfo(np.int64).max
        old_s = self._span_steps[: self._span_len]
        keep = old_s < first
        return (np.concatenate((old_s[keep], steps)),
                np.concatenate((self._span_values[: self._span_len][keep], values)))

    def _order(self, a: np.ndarray) -> np.ndarray:
        if self._len < self.capacity:
            return a[: self._len].copy()
        return np.concatenate((a[self._next:], a[: self._next]))

    def steps(self) -> np.ndarray:
        """Steps of the kept pairs, oldest first (int64 copy)."""
        return self._order(self._steps)

    def values(self) -> np.ndarray:
        """Values of the kept pairs, oldest first (float64 copy)."""
        return self._order(self._values)

    def tail(self, n: int) -> np.ndarray:
        """The last ``n`` values (fewer if fewer are kept), oldest first."""
        n = min(int(n), self._len)
        if n <= 0:
            return np.empty(0, dtype=np.float64)
        end = self._next
        start = end - n
        if start >= 0:
            return self._values[start:end].copy()
        return np.concatenate((self._values[start:], self._values[:end]))

    def last(self) -> tuple[int, float] | None:
        """The newest ``(step, value)``, or None when empty."""
        if self._len == 0:
            return None
        i = self._next - 1
        return int(self._steps[i]), float(self._values[i])

    def last_value(self) -> float | None:
        item = self.last()
        return None if item is None else item[1]

    def items(self) -> list[tuple[int, float]]:
        return list(zip(self.steps().tolist(), self.values().tolist()))

    def __iter__(self) -> Iterator[tuple[int, float]]:
        return iter(self.items())

    def __len__(self) -> int:
        return self._len

    def __bool__(self) -> bool:
        return self._len > 0

    def __repr__(self) -> str:
        return f"Series({self.name!r}, len={self._len}, capacity={self.capacity})"
