"""Find the mIoU a training script prints, in its stdout/stderr lines.

segwatch compares the script's own number with the mIoU it computes from the confusion
matrix it observed (finding ``metric.script_disagrees``), so the parse must be strict
enough not to invent numbers and loose enough for the usual spellings:

    mIoU: 12.3        miou=0.123        mIoU 2.70%       Mean IoU: 45.2
    mean_iou = 0.41   'mIoU': 45.2      val/mIoU 38.0    mIoU(%): 38.0     mIoU: tensor(0.4100)

Rules (documented in docs/CLI.md too):
- the key is ``mIoU`` or ``mean IoU`` in any case, with an optional space, ``_`` or ``-``
  inside, not part of a longer word (``mIoU_best`` and ``class IoU`` do not count);
- between key and number only spaces, a quote, ``:``, ``=`` or the word ``is`` (and an
  optional ``(%)`` after the key, a ``tensor(`` wrapper before the number);
- a key preceded by ``best``, ``max``, ``highest``, ``previous``/``prev`` or ``target`` is
  skipped (those are not the current evaluation);
- the value is in percent when a ``%`` follows the number or the key says ``(%)``;
  otherwise a value <= 1 is read as a fraction and multiplied by 100 (so ``mIoU: 0.8``
  means 80 %, and a script that prints a sub-1 % mIoU without a ``%`` sign is misread);
  a value > 1 is taken as percent;
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


def parse_miou(line: str) -> float | None:
    """The mIoU (percent, 0..100) printed on ``line``, or None."""
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
        if not math.isfinite(value) or value < 0:
            continue
        percent = bool(m.group("pct") or m.group("pctkey"))
        if not percent and value <= 1.0:
            value *= 100.0
        if value > 100.0:
            continue
        return round(value, 6)
    return None
