"""``label.last_class_missing``: labels shifted down once too often.

mmseg's ``reduce_zero_label=True`` (and a DFormer-style ``gt - 1``) maps 0 to the ignore value
and every other id k to k - 1. Applied to annotations that are already 0-based (0..C-1 with
255 for unlabeled), class 0 silently becomes ignore and the last class id C - 1 never
appears: training runs, mIoU looks fine, and every class name is off by one. (mmseg maps
255 -> 254 -> 255, so no stray 254 shows up.) Judged only where the loader is known to
reduce zero labels: the config's ``dataset.reduce_zero_label`` or the mmseg dataset's.
"""
from __future__ import annotations

import numpy as np

from .base import Rule, r4

#: sampled training batches seen before judging (a rare last class may be absent from a few)
MIN_BATCHES = 20
#: of the other classes 0..C-2, this share must appear (the labels are well sampled)
PRESENT_SHARE = 0.9


class LabelLastClassMissing(Rule):
    id = "label.last_class_missing"
    events = ("batch",)

    def __init__(self) -> None:
        self._done = False

    def check(self, state, ev):
        if self._done or ev.get("phase") != "train":
            return None
        source = None
        if state.cfg("dataset", "reduce_zero_label", False) is True:
            source = "config"
        elif state.framework_reduce_zero_label is True:
            source = "framework"
        C = state.num_classes
        if source is None or not C or C < 3 or state.batches.get("train", 0) < MIN_BATCHES:
            return None
        h = state.label_hist
        if len(h) < C - 1 or h[: C - 1].sum() <= 0:
            return None
        last = int(h[C - 1]) if len(h) >= C else 0
        vh = state.val_label_hist
        val_last = int(vh[C - 1]) if len(vh) >= C else 0
        present = int(np.count_nonzero(h[: C - 1]))
        if last > 0 or val_last > 0 or present < PRESENT_SHARE * (C - 1):
            return None
        self._done = True
        tot = state.label_totals.get("train") or [0, 0, 0]
        return self.make(state, ev, {
            "class": C - 1, "class_name": state.class_name(C - 1), "num_classes": C,
            "classes": present, "batches": state.batches.get("train", 0),
            "ignored": r4(tot[1] / tot[0]) if tot[0] else None, "source": source,
            "why": "reduce_zero_label on labels that are already 0-based",
        })


__all__ = ["LabelLastClassMissing"]
