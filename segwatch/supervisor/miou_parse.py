"""Find the mIoU a training script prints, in its stdout/stderr lines.

segwatch compares the script's own number with the mIoU it computes from the confusion
matrix it observed (finding ``metric.script_disagrees``), so the parse must be strict
enough not to invent numbers and loose enough for the usual spellings:

    mIoU: 12.3        miou=0.123        mIoU 2.70%       Mean IoU: 45.2
    mean_iou = 0.41   'mIoU': 45.2      val/mIoU 38.0    mIoU(%): 38.0     mIoU: tensor(0.4100)

Rules (also in docs/SUPERVISOR.md):
- the key is ``mIoU`` or ``mean IoU`` in any case, with an optional space, ``_`` or ``-``
  inside, not part of a longer word (``mIoU_best`` and ``class IoU`` do not count);
- between key and number only spaces, a quote, ``:``, ``=`` or the word ``is`` (and an
  optional ``(%)`` after the key, a ``tensor(`` wrapper before the number);
- a key preceded by ``best``, ``max``, ``highest``, ``previous``/``prev`` or ``target`` is
  skipped (those are not the current evaluation);
- the scale: a ``%`` after the number (or ``(%)`` after the key) means percent; a value
  > 1 means percent (and from then on the script is known to print percent). A value
  <= 1 without a sign is ambiguous (``mIoU: 0.70`` is 0.70 % in the guide's code, which
  multiplies by 100 and rounds to 2 decimals, and 70 % in mmseg-style fraction logs).
  ``MiouResolver`` decides it by comparing both readings with segwatch's own mIoU of the
  same evaluation (the one closer wins); without an evaluation to compare with (no shim, or
  none within 10 s) the value is read as a fraction (x100). Once decided, the scale stays
  fixed for the rest of the run, so the same printed line is never read two ways (only a
  value > 1, which cannot be a fraction, turns it to percent). ``parse_miou`` alone applies
  only the sign/range rules and the fraction default;
- values outside 0..100, NaN and Inf are ignored; the first valid match on a line wins.
"""
from __future__ import annotations

import math
import re

_KEY = r"(?<![A-Za-z0-9_])(?P<key>m[ _-]?iou|mean[ _-]?iou)(?![A-Za-z0-9])"
_PCT_KEY = r"(?P<pctkey>\s*[\(\[]%[\)\]])?"
_SEP = r"""['"]?\s*(?:[:=]|\bis\b)?\s*['"]?\s*"""
_WRAP = r"(?:(?:tensor|np\.float\d*|float\d*)\()?"
_NUM = r"(?P<num>[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?|nan|inf)"
_PCT = r"(?:\)?\s*(?P<pct>%))?"

PATTERN = re.compile(_KEY + _PCT_KEY + _SEP + _WRAP + _NUM + _PCT, re.IGNORECASE)
_SKIP_BEFORE = re.compile(r"(?:best|max|maximum|highest|prev|previous|target|top)[\s_:-]*$", re.IGNORECASE)


def parse_miou_raw(line: str) -> tuple[float, bool] | None:
    """The first mIoU number on ``line`` as printed, and whether a percent sign says so."""
    if "iou" not in line.lower():
        return None
    for m in PATTERN.finditer(line):
        before = line[max(0, m.start() - 12): m.start()]
        if _SKIP_BEFORE.search(before):
            continue
        try:
            value = float(m.group("num"))
        except ValueError:
            continue
        if not math.isfinite(value) or value < 0 or value > 100.0:
            continue
        return value, bool(m.group("pct") or m.group("pctkey"))
    return None


def parse_miou(line: str) -> float | None:
    """The mIoU (percent, 0..100) printed on ``line``, or None (no evaluation to compare
    with: an unmarked value <= 1 is read as a fraction)."""
    raw = parse_miou_raw(line)
    if raw is None:
        return None
    value, percent = raw
    if not percent and value <= 1.0:
        value *= 100.0
    return round(value, 6) if value <= 100.0 else None


class MiouResolver:
    """Turns printed mIoU lines into ``script_metric`` fields, deciding the scale of
    ambiguous values (<= 1, no % sign) with segwatch's own mIoU of the same evaluation.

    ``line(text, step, now)`` -> fields ready now; ``evaluation(guide, mmseg, now)`` after
    each segwatch ``eval`` event -> fields resolved with it; ``due(now, final)`` -> fields
    whose wait for an evaluation ran out (read as fractions)."""

    def __init__(self, wait: float = 10.0) -> None:
        self.wait = wait
        self.scale: str | None = None       # "percent" | "fraction" once known for this run
        self._evals = 0                      # segwatch evaluations seen
        self._used = 0                       # ... of which one was paired with a printed line
        self._last_eval: tuple[float | None, float | None] | None = None
        self._pending: list[tuple[float, float, int, str]] = []   # (deadline, raw, step, line)

    @staticmethod
    def _fields(value: float, raw: float, step: int, line: str, scale: str, by: str) -> dict:
        return {"value": round(value, 6), "raw": raw, "step": step, "line": line[:500],
                "scale": scale, "scale_by": by}

    def _by_eval(self, raw: float, step: int, line: str, ev: tuple) -> dict:
        cands = [m for m in ev if m is not None and math.isfinite(m)]
        if not cands:
            return self._fields(raw * 100.0, raw, step, line, "fraction", "default")
        d_pct = min(abs(raw - m) for m in cands)
        d_frac = min(abs(raw * 100.0 - m) for m in cands)
        scale = "percent" if d_pct <= d_frac else "fraction"
        self.scale = scale   # decided: the script prints this way for the rest of the run
        return self._fields(raw if scale == "percent" else raw * 100.0, raw, step, line, scale, "eval")

    def line(self, text: str, step: int, now: float) -> list[dict]:
        parsed = parse_miou_raw(text)
        if parsed is None:
            return []
        raw, percent = parsed
        if percent:
            return [self._fields(raw, raw, step, text, "percent", "sign")]
        if raw > 1.0:
            self.scale = "percent"
            return [self._fields(raw, raw, step, text, "percent", "range")]
        if self.scale is not None:
            value = raw if self.scale == "percent" else raw * 100.0
            return [self._fields(value, raw, step, text, self.scale, "run")]
        if self._evals > self._used and self._last_eval is not None:
            self._used = self._evals
            return [self._by_eval(raw, step, text, self._last_eval)]
        self._pending.append((now + self.wait, raw, step, text))
        return []

    def evaluation(self, guide: float | None, mmseg: float | None, now: float) -> list[dict]:
        self._evals += 1
        self._last_eval = (guide, mmseg)
        if not self._pending:
            return []
        out = []
        for _, raw, step, text in self._pending:
            if self.scale is not None:
                value = raw if self.scale == "percent" else raw * 100.0
                out.append(self._fields(value, raw, step, text, self.scale, "run"))
            else:
                out.append(self._by_eval(raw, step, text, self._last_eval))
        self._pending = []
        self._used = self._evals
        return out

    def due(self, now: float, final: bool = False) -> list[dict]:
        if not self._pending:
            return []
        out, keep = [], []
        for item in self._pending:
            deadline, raw, step, text = item
            if final or now >= deadline:
                if self.scale is None:
                    self.scale = "fraction"   # decided by default: kept for the run's next lines
                value = raw if self.scale == "percent" else raw * 100.0
                out.append(self._fields(value, raw, step, text, self.scale, "default"))
            else:
                keep.append(item)
        self._pending = keep
        return out
