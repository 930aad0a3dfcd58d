"""``model.output_is_probability``: the loss is given probabilities, not logits.

A softmax inside the model followed by CrossEntropyLoss (which applies log-softmax again)
squashes every gradient; the loss sticks near log C. The shim sends, for training
``preds`` samples, ``value_range`` ([min, max] of the logits' subsample) and
``channel_sum_dev`` (max |sum over classes - 1|). Real logits leave [0, 1] at once.
"""
from __future__ import annotations

from .base import Rule, ffloat, finite, fint, r4
from .lossfn import LossAware

#: sums over the class dimension within this of 1 ...
SUM_DEV_MAX = 1e-3
#: ... and values inside [0, 1] up to this rounding, on this many consecutive samples
RANGE_EPS = 1e-6
PROB_SAMPLES = 3


class ModelOutputIsProbability(LossAware, Rule):
    id = "model.output_is_probability"
    events = ("preds",)

    def __init__(self) -> None:
        self._n = 0
        self._first = 0

    def check(self, state, ev):
        if ev.get("phase") != "train":
            return None
        vr, dev = ev.get("value_range"), ffloat(ev.get("channel_sum_dev"))
        if not (isinstance(vr, (list, tuple)) and len(vr) == 2) or dev is None:
            return None  # not measured on this sample: neither for nor against
        lo, hi = ffloat(vr[0]), ffloat(vr[1])
        ch = fint(ev.get("channels"))
        step = fint(ev.get("step")) or 0
        prob = (finite(lo) and finite(hi) and finite(dev) and (ch is None or ch >= 2)
                and lo >= -RANGE_EPS and hi <= 1 + RANGE_EPS and dev < SUM_DEV_MAX)
        if not prob:
            self._n = 0
            return None
        if self._n == 0:
            self._first = step
        self._n += 1
        if self._n < PROB_SAMPLES:
            return None
        return self.make(state, ev, {
            "why": "the model's output lies in [0, 1] and sums to 1 over the classes (softmax applied)",
            "value_range": [r4(lo), r4(hi)], "channel_sum_dev": r4(dev),
            "samples": self._n, "since_step": self._first, "site": ev.get("site"),
        }, severity="error", phase="train")
