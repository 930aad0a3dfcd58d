"""Bounded ring buffers of ``(step, value)`` pairs.

RunState keeps every per-step quantity (loss, gradient norm, learning rate, ...) in a
``Series``: appending is O(1), memory is fixed by ``capacity``, and viewers get numpy
arrays in chronological order. numpy + stdlib only.
"""
from __future__ import annotations

import math
from typing import Iterator

import numpy as np


class Series:
    """A fixed-capacity ring buffer of ``(step, value)``; the oldest pairs fall off.

    ``total`` counts every value ever appended (also those that fell off).
    """

    __slots__ = ("capacity", "_steps", "_values", "_next", "_len", "total", "name")

    def __init__(self, capacity: int = 4096, name: str = "") -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.capacity = int(capacity)
        self.name = name
        self._steps = np.zeros(self.capacity, dtype=np.int64)
        self._values = np.full(self.capacity, np.nan, dtype=np.float64)
        self._next = 0
        self._len = 0
        self.total = 0

    def append(self, step: int, value: float | None) -> None:
        """Add one pair. ``None`` is stored as NaN."""
        i = self._next
        self._steps[i] = step
        self._values[i] = math.nan if value is None else value
        i += 1
        self._next = 0 if i == self.capacity else i
        if self._len < self.capacity:
            self._len += 1
        self.total += 1

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
