"""Where the training loop is, counted the way the script counts it.

The shim samples training batches (one in 32 steps, say), and counts a pass over the
training loader when its iterator is exhausted. Neither matches what the user sees:

- the batch ``i/N`` of the last sampled batch stays put for 32 steps; here it is advanced
  by the training steps since (at the batches-per-step rate measured between two samples
  of one pass), within the pass;
- a loader driven by a fixed number of ``next()`` calls (DFormer: ``dataloader =
  iter(train_loader)`` per epoch, then ``next(dataloader)`` ``niters`` times) is never
  exhausted, so the shim counts no pass; here a sampled index lower than the previous one
  of the same loader is a new pass;
- a script's epoch is not a loader pass (the demo's epoch is two passes); the epoch the
  script prints (``epoch 2: mIoU ...``, ``Epoch [3/10]``) is its own count. Without one,
  the report says it cannot know the script's epochs and gives the loader passes instead.
"""
from __future__ import annotations

import re
from typing import Any

from .coerce import fint as _int

#: ``epoch 2``, ``Epoch [3/10]``, ``epoch: 4``, ``Epoch 5/100`` (not ``epochs``, not ``num_epoch``)
EPOCH_RE = re.compile(r"(?<![A-Za-z0-9_])epoch(?![A-Za-z_])\s*[:=#\[(]?\s*(\d{1,6})(?:\s*/\s*(\d{1,6}))?",
                      re.IGNORECASE)


def printed_epoch(line: Any) -> tuple[int, int | None] | None:
    """The epoch number a script's output line names (and the total after a slash)."""
    if not isinstance(line, str) or "poch" not in line.lower():
        return None
    m = EPOCH_RE.search(line)
    if m is None:
        return None
    total = int(m.group(2)) if m.group(2) else None
    return int(m.group(1)), total


class LoopProgress:
    """The training loader's progress from sampled ``batch`` events, and the script's
    printed epoch from its ``output`` lines."""

    def __init__(self) -> None:
        self.loader: Any = None
        self.index: int | None = None     # 0-based index of the last sampled batch in its pass
        self.length: int | None = None    # len(loader), or None
        self.step: int = 0                # the training step of that sample
        self.per_step: float = 1.0        # batches per training step (gradient accumulation: > 1)
        self.passes_seen = 0              # new passes seen as a sampled index going back
        self.shim_passes = 0              # passes the shim counted (exhausted iterators)
        self.script_epoch: int | None = None
        self.script_epochs_total: int | None = None

    def on_batch(self, ev: dict, step: int) -> None:
        idx, length = _int(ev.get("index")), _int(ev.get("length"))
        ep = _int(ev.get("epoch"))
        if ep is not None and ep > self.shim_passes:
            self.shim_passes = ep
        if idx is None or idx < 0:
            return
        loader = ev.get("loader")
        if self.index is not None and loader == self.loader:
            if idx < self.index:
                self.passes_seen += 1
            elif idx > self.index and step > self.step:
                self.per_step = min(64.0, max(1.0, (idx - self.index) / (step - self.step)))
        self.loader, self.index, self.step = loader, idx, step
        self.length = length if length and length > 0 else None

    def on_output(self, line: Any) -> None:
        got = printed_epoch(line)
        if got is not None:
            self.script_epoch, total = got
            if total:
                self.script_epochs_total = total

    @property
    def passes(self) -> int:
        """Passes over the training loader: the shim's count, or more when its iterators
        were restarted before they were exhausted (``next()``-driven loops)."""
        return max(self.shim_passes, self.passes_seen)

    def batch(self, now_step: int) -> tuple[int, int | None] | None:
        """(i, N): the 1-based batch of the current pass now (N None when the loader has no
        length); None before the first sampled training batch."""
        if self.index is None:
            return None
        i = self.index + int(max(0, now_step - self.step) * self.per_step)
        if self.length:
            i %= self.length
        return i + 1, self.length
