"""The rule interface: a rule sees ``(state, event)`` and returns a Finding or None.

Rules read statistics that are already in the event or in RunState, never tensors. A rule
may keep small private counters (runs, windows) so that every check is O(1); a fresh
RunState builds fresh rule instances, so replaying the same events gives the same result.
"""
from __future__ import annotations

import math

from ..coerce import ffloat, fint  # noqa: F401  (re-exported for the rule modules)
from ..findings import SEVERITY, Finding


class Rule:
    #: finding id raised by this rule
    id: str = ""
    #: event types this rule wants to see
    events: tuple[str, ...] = ()
    #: True for rules that also look at events of ranks > 0 (dist.*)
    all_ranks: bool = False

    def check(self, state, event: dict) -> Finding | None:  # pragma: no cover - interface
        raise NotImplementedError

    def make(self, state, event: dict | None, evidence: dict, severity: str | None = None,
             phase: str | None = None, step: int | None = None) -> Finding:
        if step is None:
            step = fint(event.get("step")) if event else None
            if step is None:
                step = state.step
        if phase is None:
            phase = (event or {}).get("phase") or ("val" if (event or {}).get("type") == "eval" else "train")
            if phase not in ("train", "val"):
                phase = "train"
        return Finding(id=self.id, severity=severity or SEVERITY.get(self.id, "warning"),
                       first_step=int(step), phase=phase, evidence=evidence)


def script_miou(state, ev: dict) -> tuple[int, float] | None:
    """(step, value) of a ``script_metric`` event carrying a finite mIoU, else None; the step
    defaults to the run's current step when the event has none."""
    if ev.get("name", "miou") != "miou":
        return None
    v = ffloat(ev.get("value"))
    if v is None or not math.isfinite(v):
        return None
    step = fint(ev.get("step"))
    return (state.step if step is None else step), float(v)


def finite(v: float | None) -> bool:
    return v is not None and math.isfinite(v)


def r4(v: float | None) -> float | None:
    """Round for evidence (keeps reports readable); non-finite passes through."""
    if v is None or not math.isfinite(v):
        return v
    return float(f"{v:.6g}")
