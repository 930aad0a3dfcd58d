"""Prediction diversity: ``pred.collapse`` and ``pred.low_diversity`` (guide section 1).

One yardstick in training and at evaluation: the top predicted class's share of the
predicted pixels (``thresholds.collapse_share``, default 0.98) makes a collapse, and
classes under ``STRAY_SHARE`` of the pixels are stray pixels that count for neither rule
(a model that predicts class 0 on 99 % of the pixels and a few pixels of two other classes
has collapsed all the same).

A healthy model early in training predicts only the two or three dominant classes while
its loss falls fast; that is not a collapse. So mid-run these rules only count training
samples after ``policy.grace_steps`` and need persistence; at evaluation they need either
the grace window to be over or the loss to have stopped falling fast. The grace window
protects a young model mid-run, not the final verdict: a run that ends collapsed (its last
evaluations, or without any evaluation its last training samples) is reported as collapsed
when it ends (``bye`` / final ``status``), however short it was.
"""
from __future__ import annotations

import numpy as np

from .. import metrics as _metrics
from .base import Rule, ffloat, fint, r4
from .lossfn import LossAware

#: default of ``thresholds.collapse_share``, chosen on the fault zoos: the healthy trainings'
#: largest top-class share was 0.68 on a training sample and 0.69 at an evaluation (early
#: and late zoo, labels' top class 0.44-0.45); collapses measured 0.99 (issue 15's late
#: collapse, stray pixels of 1-2 classes), 0.992 and 1.0 (high LR). 0.98 sits between with
#: room on both sides; an imbalanced dataset is guarded by the labels' own share.
DEFAULT_COLLAPSE_SHARE = 0.98
#: a predicted class under this share of the predicted pixels is a stray pixel
STRAY_SHARE = 0.005
#: a training collapse needs this many consecutive samples over this many steps ...
COLLAPSE_SAMPLES = 3
COLLAPSE_SPAN = 5
#: ... or, when samples are sparse (the coverage floor), fewer samples over more steps
COLLAPSE_SPARSE_SAMPLES = 2
COLLAPSE_SPARSE_SPAN = 16
#: training low-diversity needs this many consecutive samples over this many steps
LOWDIV_SAMPLES = 5
LOWDIV_SPAN = 10
#: end-of-run verdict from evaluations: this many collapsed evaluations at the end
END_EVALS = 2

FINAL_STATUSES = ("finished", "killed", "failed", "lost")


def collapse_share(state) -> float:
    return float(state.cfg("thresholds", "collapse_share", DEFAULT_COLLAPSE_SHARE))


def effective_classes(h: np.ndarray) -> list[int]:
    """Predicted classes that are more than stray pixels."""
    total = float(h.sum())
    if total <= 0:
        return []
    return [int(i) for i in np.flatnonzero(h / total >= STRAY_SHARE)]


def dominance(pred: np.ndarray, gt: np.ndarray | None, share_min: float) -> dict | None:
    """The collapse verdict on one predicted-class histogram: ``{class, share, gt_share,
    classes, stray}`` when the top class covers >= ``share_min`` of the predicted pixels
    and the labels are not that class just as much (then predicting it is right), else None."""
    total = int(pred.sum())
    if total <= 0:
        return None
    c = int(pred.argmax())
    share = float(pred[c]) / total
    if share < share_min:
        return None
    gt_share = None
    if gt is not None and gt.size > c and int(gt.sum()) > 0:
        gt_share = float(gt[c]) / float(gt.sum())
        if gt_share >= share_min:
            return None
    eff = effective_classes(pred)
    return {"class": c, "share": share, "gt_share": gt_share,
            "classes": int(np.count_nonzero(pred)), "stray": max(int(np.count_nonzero(pred)) - len(eff), 0)}


def eval_dominance(state, m: np.ndarray) -> dict | None:
    """``dominance`` of an evaluation's confusion matrix (columns = predictions)."""
    return dominance(m.sum(axis=0), m.sum(axis=1), collapse_share(state))


def eval_gate(state, step: int) -> bool:
    """May an evaluation at ``step`` be judged on its predicted classes mid-run?

    Never before training started (step 0: an untrained model). After the grace window,
    always. Inside it only when the loss is known not to fall fast: a young model that is
    still learning quickly, or one too young for its loss to say anything (an evaluation at
    step 2 of a DFormer-style sanity check), is left alone; the end-of-run verdict still
    judges a short run that ends collapsed.
    """
    if step <= 0:
        return False
    if step >= state.grace_steps:
        return True
    return state.loss_falling_fast() is False


def own_eval_seen(state) -> bool:
    """Did segwatch see the predictions of an evaluation (a confusion matrix)?"""
    return any(e.get("pred_classes") is not None for e in reversed(state.evals))


def signature(state, m: np.ndarray | None, c: int) -> dict:
    """Collapse signature for class ``c``: expected mIoU p_c / C vs the observed one."""
    C = state.num_classes or (len(m) if m is not None else 0)
    out: dict = {}
    if m is not None and m.sum() > 0:
        gt = m.sum(axis=1).astype(np.float64)
        if gt.sum() > 0 and c < len(gt):
            p = float(gt[c] / gt.sum())
            n = len(gt)
            out = {
                "p_c": r4(p), "expected_miou": r4(100.0 * p / n),
                "observed_miou": r4(_metrics.miou_guide(m)),
                "formula": "mIoU = 100 * p_c / C (exact when only class c is predicted)",
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


class PredCollapse(LossAware, Rule):
    """One dominant predicted class: from training ``preds`` samples after the grace window
    (persistent), from any evaluation's confusion matrix, at the end of the run, or (only
    when segwatch never saw an evaluation's predictions) from the script's printed mIoU
    matching p_c / C at two distinct evaluations, which ``metric.single_class_signature``
    establishes just before this rule runs."""
    id = "pred.collapse"
    events = ("preds", "eval", "script_metric", "bye", "status")

    def __init__(self) -> None:
        self._cls: int | None = None
        self._len = 0
        self._first = 0
        self._min_share = 1.0
        # the same, regardless of grace: the run's tail, for the end-of-run verdict
        self._tail: dict | None = None
        # collapsed evaluations at the end: (first step, first index, last evidence)
        self._evals: dict | None = None

    def _reset(self) -> None:
        self._cls, self._len, self._min_share = None, 0, 1.0

    def check(self, state, ev):
        typ = ev["type"]
        if typ == "eval":
            return self._check_eval(state, ev)
        if typ == "script_metric":
            return self._check_script(state, ev)
        if typ in ("bye", "status"):
            return self._check_end(state, ev)
        if ev.get("phase") != "train":
            return None
        step = fint(ev.get("step")) or 0
        h = ev.get("hist")
        if not h:
            return None
        h = np.asarray(h, dtype=np.int64)
        g = ev.get("gt_hist")
        g = np.asarray(g, dtype=np.int64) if g else None
        d = dominance(h, g, collapse_share(state))
        self._track_tail(d, step, ev)
        if d is None or step <= state.grace_steps:
            self._reset()
            return None
        c, share = d["class"], d["share"]
        if c != self._cls:
            self._reset()
            self._cls, self._first = c, step
        self._len += 1
        self._min_share = min(self._min_share, share)
        span = step - self._first
        if not ((self._len >= COLLAPSE_SAMPLES and span >= COLLAPSE_SPAN)
                or (self._len >= COLLAPSE_SPARSE_SAMPLES and span >= COLLAPSE_SPARSE_SPAN)):
            return None
        return self.make(state, ev, self._train_evidence(state, ev, d, self._first, self._len,
                                                         self._min_share), phase="train")

    def _track_tail(self, d: dict | None, step: int, ev: dict) -> None:
        if d is None or step <= 0:
            self._tail = None
            return
        t = self._tail
        if t is None or t["class"] != d["class"]:
            self._tail = t = {"class": d["class"], "first": step, "n": 0, "min_share": 1.0}
        t["n"] += 1
        t["min_share"] = min(t["min_share"], d["share"])
        t["last"], t["d"], t["ev"] = step, d, ev

    def _train_evidence(self, state, ev, d, first, n, min_share) -> dict:
        c = d["class"]
        evidence = {
            "source": "training predictions",
            "class": c, "class_name": state.class_name(c),
            "share": r4(d["share"]), "min_share": r4(min_share),
            "threshold": collapse_share(state), "stray_classes": d["stray"],
            "samples": n, "since_step": first, "step": fint(ev.get("step")),
            "unique": fint(ev.get("unique")), "grace_steps": state.grace_steps,
        }
        evidence.update(signature(state, None, c))
        return evidence

    def _check_script(self, state, ev):
        if own_eval_seen(state) or self.id in state.findings:
            # segwatch's own matrices decide (see _check_eval); and evidence segwatch saw
            # itself is never replaced by evidence read from the script's output
            return None
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
        d = eval_dominance(state, m)
        if d is None or step <= 0:
            self._evals = None
            return None
        c = d["class"]
        if self._evals is None:   # consecutive collapsed evaluations, to whichever class
            self._evals = {"first": step, "n": 0}
        self._evals["n"] += 1
        evidence = {
            "source": "evaluation confusion matrix",
            "class": c, "class_name": state.class_name(c), "share": r4(d["share"]),
            "threshold": collapse_share(state), "pred_classes": d["classes"],
            "stray_classes": d["stray"], "eval_index": fint(ev.get("index")), "step": step,
            "gt_classes": int(np.count_nonzero(m.sum(axis=1))),
            "collapsed_evaluations": self._evals["n"],
        }
        evidence.update(signature(state, m, c))
        self._evals["evidence"] = evidence
        if not eval_gate(state, step):
            return None
        return self.make(state, ev, evidence, phase="val")

    def _check_end(self, state, ev):
        """The final verdict: the run ended collapsed, whatever the grace window said."""
        if ev["type"] == "status" and ev.get("status") not in FINAL_STATUSES:
            return None
        if self.id in state.findings:
            return None  # (judged again at the final status: an evaluation may follow bye)
        last = state.latest_eval()
        e = self._evals
        if e is not None and last is not None and e["evidence"].get("step") == last.get("step"):
            if e["n"] < END_EVALS and state.step < state.grace_steps:
                return None  # one young evaluation is not a verdict
            evidence = dict(e["evidence"], verdict="the run ended collapsed",
                            since_step=e["first"])
            f = self.make(state, ev, evidence, phase="val", step=e["first"])
            f.last_step = int(last.get("step") or e["first"])
            return f
        t = self._tail
        if t is None or own_eval_seen(state):
            return None  # the last evaluation was diverse: it has the last word
        span = t["last"] - t["first"]
        if not ((t["n"] >= COLLAPSE_SAMPLES and span >= COLLAPSE_SPAN)
                or (t["n"] >= COLLAPSE_SPARSE_SAMPLES and span >= COLLAPSE_SPARSE_SPAN)):
            return None
        evidence = self._train_evidence(state, t["ev"], t["d"], t["first"], t["n"], t["min_share"])
        evidence["verdict"] = "the run ended collapsed"
        f = self.make(state, ev, evidence, phase="train", step=t["first"])
        f.last_step = int(t["last"])
        return f


class PredLowDiversity(LossAware, Rule):
    """Fewer than ``min_pred_classes`` classes predicted (stray pixels not counted) while
    the labels hold at least that many; a collapse (one dominant class) is left to
    ``pred.collapse``."""
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
        eff = effective_classes(m.sum(axis=0))
        npred = len(eff)
        ngt = int(np.count_nonzero(m.sum(axis=1)))
        collapsed = eval_dominance(state, m) is not None
        if collapsed or not (1 <= npred < k and ngt >= k and eval_gate(state, step)):
            self._low_evals = 0
            return None
        self._low_evals += 1
        if self._low_evals < 2 and state.loss_still_falling() is True:
            return None
        return self.make(state, ev, {
            "source": "evaluation confusion matrix", "pred_classes": npred,
            "stray_classes": int(np.count_nonzero(m.sum(axis=0))) - npred,
            "gt_classes": ngt, "min_pred_classes": k, "eval_index": fint(ev.get("index")),
            "step": step, "evaluations": self._low_evals, "predicted": eff,
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
        eff = effective_classes(h)
        uniq = len(eff)
        g = ev.get("gt_hist")
        ngt = int(np.count_nonzero(g)) if g else int(np.count_nonzero(state.label_hist))
        if total <= 0 or not (1 <= uniq < k) or ngt < k or h.max() / total >= collapse_share(state):
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
            "step": step, "predicted": eff[:16],
        }, phase="train")
