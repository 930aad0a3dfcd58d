"""Prediction diversity: ``pred.collapse`` and ``pred.low_diversity`` (guide section 1).

A healthy model early in training predicts only the two or three dominant classes while
its loss falls fast; that is not a collapse. So in training these rules only count samples
after ``policy.grace_steps`` and need persistence; at evaluation they need either the
grace window to be over or the loss to have stopped falling fast.
"""
from __future__ import annotations

import numpy as np

from .. import metrics as _metrics
from .base import Rule, ffloat, fint, r4

#: a training sample is "one class" when its top class covers at least this share
COLLAPSE_SHARE = 0.995
#: ... for at least this many consecutive samples, spanning at least this many steps
COLLAPSE_SAMPLES = 3
COLLAPSE_SPAN = 5
#: training low-diversity needs this many consecutive samples over this many steps
LOWDIV_SAMPLES = 5
LOWDIV_SPAN = 10


def eval_gate(state, step: int) -> bool:
    """May an evaluation at ``step`` be judged on its predicted classes?

    Never before training started (step 0: an untrained model). After the grace window,
    always. Inside it only when the loss is not falling fast (or nothing is known about
    the loss): a young model that is still learning quickly is left alone.
    """
    if step <= 0:
        return False
    if step >= state.grace_steps:
        return True
    return state.loss_falling_fast() is not True


def signature(state, m: np.ndarray | None, c: int) -> dict:
    """Collapse signature for class ``c``: expected mIoU p_c / C vs the observed one."""
    C = state.num_classes or (len(m) if m is not None else 0)
    out: dict = {}
    if m is not None and m.sum() > 0:
        sig = _metrics.collapse_signature(m)
        if sig is not None and int(sig.get("class", -1)) == c:
            out = {
                "p_c": r4(sig["share"]),
                "expected_miou": r4(sig["expected_miou"]),
                "observed_miou": r4(sig["observed_miou"]),
                "formula": "mIoU = 100 * p_c / C",
            }
            return out
    lh = state.label_hist
    if C and lh.size > c and lh.sum() > 0:
        p = float(lh[c]) / float(lh.sum())
        out = {
            "p_c": r4(p),
            "expected_miou": r4(100.0 * p / C),
            "formula": "mIoU = 100 * p_c / C (p_c from training labels)",
        }
        ev = state.latest_eval()
        if ev and ev.get("miou") is not None:
            out["observed_miou"] = r4(ev["miou"])
    return out


class PredCollapse(Rule):
    """One predicted class: from training ``preds`` samples after the grace window
    (persistent), from an evaluation's confusion matrix, or (when the shim could not see
    the predictions) from the script's printed mIoU matching p_c / C twice in a row,
    which ``metric.single_class_signature`` establishes just before this rule runs."""
    id = "pred.collapse"
    events = ("preds", "eval", "script_metric")

    def __init__(self) -> None:
        self._cls: int | None = None
        self._len = 0
        self._first = 0
        self._min_share = 1.0

    def _reset(self) -> None:
        self._cls, self._len, self._min_share = None, 0, 1.0

    def check(self, state, ev):
        if ev["type"] == "eval":
            return self._check_eval(state, ev)
        if ev["type"] == "script_metric":
            return self._check_script(state, ev)
        if ev.get("phase") != "train":
            return None
        step = fint(ev.get("step")) or 0
        h = ev.get("hist")
        if not h or step <= state.grace_steps:
            self._reset()
            return None
        h = np.asarray(h, dtype=np.int64)
        total = int(h.sum())
        if total <= 0:
            return None
        c = int(h.argmax())
        share = float(h[c]) / total
        if share < COLLAPSE_SHARE:
            self._reset()
            return None
        g = ev.get("gt_hist")
        if g:
            g = np.asarray(g, dtype=np.int64)
            gs = int(g.sum())
            if gs > 0 and g.size > c and g[c] / gs >= 0.99:  # the labels are that class too
                self._reset()
                return None
        if c != self._cls:
            self._reset()
            self._cls, self._first = c, step
        self._len += 1
        self._min_share = min(self._min_share, share)
        if self._len < COLLAPSE_SAMPLES or step - self._first < COLLAPSE_SPAN:
            return None
        evidence = {
            "source": "training predictions",
            "class": c, "class_name": state.class_name(c),
            "share": r4(share), "min_share": r4(self._min_share),
            "samples": self._len, "since_step": self._first, "step": step,
            "unique": fint(ev.get("unique")), "grace_steps": state.grace_steps,
        }
        evidence.update(signature(state, state.confusion, c))
        return self.make(state, ev, evidence, phase="train")

    def _check_script(self, state, ev):
        sig = state.findings.get("metric.single_class_signature")
        if sig is None or not str(sig.evidence.get("source", "")).startswith("script"):
            return None
        step = fint(ev.get("step"))
        step = state.step if step is None else step
        if sig.last_step != step or sig.evidence.get("observed_miou") != r4(ffloat(ev.get("value"))):
            return None
        e = sig.evidence
        return self.make(state, ev, {
            "source": "script mIoU = p_c / C (predictions not observed)",
            "class": e.get("class"), "class_name": e.get("class_name"),
            "p_c": e.get("p_c"), "expected_miou": e.get("expected_miou"),
            "observed_miou": e.get("observed_miou"), "evaluations": e.get("evaluations"),
            "formula": "mIoU = 100 * p_c / C",
        }, phase="val", step=step)

    def _check_eval(self, state, ev):
        if ev.get("aborted"):
            return None
        m = state.confusion if isinstance(ev.get("matrix"), list) else None
        if m is None or m.sum() <= 0:
            return None
        step = fint(ev.get("step")) or 0
        pred = m.sum(axis=0)
        if np.count_nonzero(pred) != 1 or not eval_gate(state, step):
            return None
        c = int(pred.argmax())
        evidence = {
            "source": "evaluation confusion matrix",
            "class": c, "class_name": state.class_name(c), "share": 1.0,
            "eval_index": fint(ev.get("index")), "step": step,
            "gt_classes": int(np.count_nonzero(m.sum(axis=1))),
        }
        evidence.update(signature(state, m, c))
        return self.make(state, ev, evidence, phase="val")


class PredLowDiversity(Rule):
    id = "pred.low_diversity"
    events = ("preds", "eval")

    def __init__(self) -> None:
        self._len = 0
        self._first = 0
        self._low_evals = 0

    def check(self, state, ev):
        k = int(state.cfg("thresholds", "min_pred_classes", 5))
        if ev["type"] == "eval":
            return self._check_eval(state, ev, k)
        return self._check_train(state, ev, k)

    def _check_eval(self, state, ev, k: int):
        """At evaluation, after the grace window: fewer than k predicted classes while the
        labels hold >= k. A young model still learning fast gets one more evaluation: it
        fires when the loss has stopped falling, or at the second such evaluation in a row."""
        if ev.get("aborted") or not isinstance(ev.get("matrix"), list):
            return None
        m = state.confusion
        if m is None or m.sum() <= 0:
            return None
        step = fint(ev.get("step")) or 0
        npred = int(np.count_nonzero(m.sum(axis=0)))
        ngt = int(np.count_nonzero(m.sum(axis=1)))
        if not (2 <= npred < k and ngt >= k and eval_gate(state, step)):
            self._low_evals = 0
            return None
        self._low_evals += 1
        if self._low_evals < 2 and state.loss_still_falling() is True:
            return None
        return self.make(state, ev, {
            "source": "evaluation confusion matrix", "pred_classes": npred,
            "gt_classes": ngt, "min_pred_classes": k, "eval_index": fint(ev.get("index")),
            "evaluations": self._low_evals,
            "predicted": [int(i) for i in np.flatnonzero(m.sum(axis=0))],
        }, phase="val")

    def _check_train(self, state, ev, k: int):
        if ev.get("phase") != "train":
            return None
        step = fint(ev.get("step")) or 0
        h = ev.get("hist")
        if not h or step <= state.grace_steps:
            self._len = 0
            return None
        h = np.asarray(h, dtype=np.int64)
        total = int(h.sum())
        uniq = fint(ev.get("unique"))
        if uniq is None:
            uniq = int(np.count_nonzero(h))
        g = ev.get("gt_hist")
        ngt = int(np.count_nonzero(g)) if g else int(np.count_nonzero(state.label_hist))
        if total <= 0 or not (2 <= uniq < k) or ngt < k or h.max() / total >= 0.995:
            self._len = 0
            return None
        if state.loss_still_falling() is not False:  # still learning (or unknown): wait
            self._len = 0
            return None
        if self._len == 0:
            self._first = step
        self._len += 1
        if self._len < LOWDIV_SAMPLES or step - self._first < LOWDIV_SPAN:
            return None
        return self.make(state, ev, {
            "source": "training predictions", "pred_classes": uniq, "gt_classes": ngt,
            "min_pred_classes": k, "samples": self._len, "since_step": self._first,
            "predicted": [int(i) for i in np.flatnonzero(h)][:16],
        }, phase="train")
