"""Evaluation-side rules (guide section 3, problems 1 and 2): the confusion matrix, the
mIoU series, the one-class signature, the script's own mIoU, and aborted evaluations."""
from __future__ import annotations

import math
from collections import deque

import numpy as np

from .. import metrics as _metrics
from .base import Rule, finite, fint, r4, script_miou
from .labels import rescaled_eval_inputs
from .lossfn import LossAware
from .preds import collapse_share, eval_gate, own_eval_seen

#: a script's mIoU and segwatch's disagree when they differ by more than this (points)
DISAGREE_POINTS = 0.5
#: identical means |delta| below this
STUCK_EPS = 1e-9


class MetricCmEmpty(LossAware, Rule):
    id = "metric.cm_empty"
    events = ("eval", "script_metric")

    def check(self, state, ev):
        if ev.get("type") == "script_metric":
            return self._script_class_empty(state, ev)
        if ev.get("aborted"):
            return None  # metric.eval_aborted explains it
        m = ev.get("matrix")
        labels_seen = state.label_totals["val"][0] > 0 or state.label_totals["train"][0] > 0
        e = state.latest_eval() or {}
        # the validation batches of this pass held labels, none of them countable (all
        # ignore or out of range): whatever the script does, its matrix is empty
        no_valid = (e.get("label_batches") or 0) > 0 and (e.get("label_pixels") or 0) > 0 \
            and (e.get("label_valid") or 0) == 0
        if isinstance(m, list) and m:
            if state.confusion is None or state.confusion.sum() > 0:
                return None
        elif not no_valid and (not labels_seen or state.out_channels is None):
            # No matrix: an empty confusion matrix only if the shim did find the logits
            # (model/preds seen); otherwise it simply could not observe this evaluation.
            return None
        vt, vi, vo = state.label_totals["val"]
        oor = fint(ev.get("oor")) or 0
        # under ignore_index: auto the shim counts the ignore value segwatch inferred (255) as
        # out of range; evidence says what the rule used: those pixels are ignored, not oor
        inferred = state.inferred_ignore if state.ignore_is_auto else None
        oor_values = ev.get("oor_values") if isinstance(ev.get("oor_values"), dict) else {}
        ignored_inferred = 0
        if inferred is not None:
            ignored_inferred = fint(oor_values.get(str(inferred), oor_values.get(inferred))) or 0
            oor = max(0, oor - ignored_inferred)
        sm = fint(ev.get("size_mismatch")) or 0
        if sm and not no_valid and (m is None or not m) and rescaled_eval_inputs(state):
            return None   # outputs of rescaled/cropped images: this pass was not observable
        reasons = []
        if no_valid:
            reasons.append("no validation label pixel of this evaluation is a valid class "
                           "(all ignore or out of range)")
        elif m is None or (isinstance(m, list) and not m):
            reasons.append("no logits were paired with labels")
        if vt and vi >= vt and not no_valid:
            reasons.append("every validation label pixel is the ignore value")
        if oor:
            reasons.append(f"{oor} label pixels outside 0..C-1 were not counted")
        if ignored_inferred:
            reasons.append(f"{ignored_inferred} label pixels equal the inferred ignore value {inferred}")
        if sm:
            reasons.append(f"{sm} batches had prediction/label size mismatches")
        if not reasons:
            reasons.append("no pixel was counted")
        return self.make(state, ev, {
            "eval_index": fint(ev.get("index")), "batches": ev.get("batches"),
            "pixels": fint(ev.get("pixels")) or 0, "oor": oor, "size_mismatch": sm,
            "val_label_pixels": vt, "val_ignored": vi, "val_out_of_range": vo,
            "ignore_index": inferred if inferred is not None else ev.get("ignore_index", state.ignore_index),
            **({"ignore_inferred": True, "ignored_pixels": ignored_inferred} if inferred is not None else {}),
            "why": "; ".join(reasons),
        }, phase="val")

    def _script_class_empty(self, state, ev):
        """The script's own metric class (seen by an adapter) computed its mIoU with no
        ``update()`` call and no pixel: its matrix is empty, whether or not segwatch could
        pair this pass itself (a sliding-window or multi-scale evaluation it cannot observe)."""
        if ev.get("source") != "metrics_class":
            return None
        if fint(ev.get("updates")) != 0 or fint(ev.get("pixels")) != 0:    # counted, or not said
            return None
        cls = ev.get("cls") or "metric class"
        return self.make(state, ev, {
            "eval_index": None, "batches": None, "pixels": 0, "source": "metrics_class", "class": cls,
            "updates": 0, "why": f"the script's {cls} computed its mIoU without one update() call",
        }, phase="val")


class MetricEvalAborted(Rule):
    """An evaluation pass stopped on an exception. What happened next is in ``outcome``:
    "raised" until known; "swallowed" once training went on (a later training step or
    evaluation) or the script ended otherwise; "ended_run" when the process ended with that
    very exception. Then the evaluation is where the run died, not a hidden error: when
    another error finding already names the cause (loss.ignore_index_mismatch...), this one
    points to it (``cause``) and steps down to info instead of blaming twice."""
    id = "metric.eval_aborted"
    events = ("eval", "step", "bye")

    def __init__(self) -> None:
        self._pending: tuple[int, str | None] | None = None   # (step of the pass, exception type)

    def check(self, state, ev):
        t = ev["type"]
        if t == "eval" and ev.get("aborted"):
            exc = ev.get("exception") if isinstance(ev.get("exception"), dict) else {}
            step = fint(ev.get("step"))
            self._pending = (state.step if step is None else step, exc.get("type"))
            return self.make(state, ev, {
                "eval_index": fint(ev.get("index")), "batches": ev.get("batches"),
                "expected": ev.get("expected"), "exception": exc.get("type"),
                "message": exc.get("message"), "where": exc.get("where"), "outcome": "raised",
            }, phase="val")
        if self._pending is None:
            return None
        pending_step, exc_type = self._pending
        if t == "eval" or (t == "step" and (fint(ev.get("step")) or 0) > pending_step):
            self._settle(state, "swallowed")
        elif t == "bye":
            reason = str(ev.get("reason") or "")
            if reason.startswith("exception:"):
                ended_with = reason[len("exception:"):].split(":", 1)[0].strip()
                same = exc_type is None or ended_with == exc_type or ended_with.endswith("." + exc_type)
                self._settle(state, "ended_run" if same else "swallowed")
            elif reason == "finished" or reason.startswith("SystemExit"):
                self._settle(state, "swallowed")
        return None

    def _settle(self, state, outcome: str) -> None:
        """Amend the finding raised at the pass in place (the same firing, now understood)."""
        self._pending = None
        f = state.findings.get(self.id)
        if f is None:
            return
        f.evidence = dict(f.evidence, outcome=outcome)
        if outcome != "ended_run":
            return
        causes = [g.id for g in state.findings.values()
                  if g.id != self.id and not g.id.startswith("metric.") and g.severity == "error"]
        if causes:
            f.evidence["cause"] = causes[0]
            f.severity = "info"


class MetricMiouStuck(Rule):
    """N consecutive evaluations with bit-identical mIoU, from segwatch's own matrices or
    from the values the script printed (``script_metric``). Evaluations at the same
    training step (the same weights evaluated again) count as one."""
    id = "metric.miou_stuck"
    events = ("eval", "script_metric")

    def __init__(self) -> None:
        self._own: deque = deque(maxlen=64)
        self._script: deque = deque(maxlen=64)

    @staticmethod
    def _push(series: deque, step: int, value: float) -> None:
        """Evaluations of the same step (no training in between) count once: the last."""
        if series and series[-1][0] == step:
            series[-1] = (step, value)
        else:
            series.append((step, value))

    def _stuck(self, state, series: deque, n: int) -> bool:
        if len(series) < n:
            return False
        vals = [v for _, v in list(series)[-n:]]
        return max(vals) - min(vals) < STUCK_EPS

    def check(self, state, ev):
        n = max(2, int(state.cfg("thresholds", "miou_stuck_evals", 3)))
        if ev["type"] == "eval":
            if ev.get("aborted") or not state.evals:
                return None
            e = state.evals[-1]
            if e.get("miou") is None or e.get("sanity"):
                return None
            self._push(self._own, e["step"], float(e["miou"]))
            series, source = self._own, "segwatch evaluations"
        else:
            got = script_miou(state, ev)
            if got is None:
                return None
            self._push(self._script, *got)
            series, source = self._script, "script output"
        if not self._stuck(state, series, n):
            return None
        last = list(series)[-n:]
        return self.make(state, ev, {
            "source": source, "value": r4(last[-1][1]), "evaluations": n,
            "steps": [int(s) for s, _ in last],
        }, phase="val")


class MetricSingleClassSignature(LossAware, Rule):
    """mIoU = p_c / C: one predicted class c.

    From segwatch's own confusion matrix (exact). Only when segwatch never saw an
    evaluation's predictions (no matrix: the shim could not pair logits with labels) from
    the mIoU the script prints: it must equal 100 * p_c / C (to the printed precision) for
    the same class c at two distinct evaluations (distinct training steps: a script that
    prints one evaluation's mIoU in two lines, plus an adapter's event, is one evaluation),
    with p_c the share of c in the validation labels segwatch saw. The class must be the one
    the training predictions are dominated by when those were seen, or else the unique best
    match, clearly ahead of the second-best class (with 37 classes, several p_c / C lie
    within a printed rounding of almost any small mIoU).
    """
    id = "metric.single_class_signature"
    events = ("eval", "script_metric", "preds")
    #: printed values carry two decimals; allow their rounding plus a little
    SCRIPT_TOL = 0.011
    #: the second-best class's p_c / C must be at least this far (points) from the value
    SCRIPT_SEPARATION = 0.05

    def __init__(self) -> None:
        self._match: int | None = None
        self._steps: list[int] = []
        self._train_top: tuple[int, float] | None = None  # last training preds: (class, share)

    def check(self, state, ev):
        if ev["type"] == "preds":
            if ev.get("phase") == "train" and ev.get("hist"):
                h = np.asarray(ev["hist"], dtype=np.int64)
                if h.sum() > 0:
                    self._train_top = (int(h.argmax()), float(h.max()) / float(h.sum()))
            return None
        if ev["type"] == "script_metric":
            return self._check_script(state, ev)
        if ev.get("aborted") or not isinstance(ev.get("matrix"), list):
            return None
        m = state.confusion
        if m is None or m.sum() <= 0:
            return None
        step = fint(ev.get("step")) or 0
        sig = _metrics.collapse_signature(m)
        if sig is None or not eval_gate(state, step):
            return None
        obs, exp = float(sig["observed_miou"]), float(sig["expected_miou"])
        if not math.isclose(obs, exp, rel_tol=1e-6, abs_tol=1e-9):
            return None
        c = int(sig["class"])
        C = m.shape[0]
        ev_d = {
            "source": "evaluation confusion matrix",
            "class": c, "class_name": state.class_name(c), "num_classes": C,
            "p_c": r4(sig["share"]), "expected_miou": r4(exp), "observed_miou": r4(obs),
            "formula": "mIoU = 100 * p_c / C", "eval_index": fint(ev.get("index")),
            "step": step,
            "note": ("= 100/C: the predicted class is the only one in the labels"
                     if abs(float(sig["share"]) - 1.0) < 1e-12 else
                     "100/C would need every labelled pixel to be class c"),
        }
        if "expected_miou_mmseg" in sig:
            ev_d["expected_miou_mmseg"] = r4(sig["expected_miou_mmseg"])
        return self.make(state, ev, ev_d, phase="val")

    def _reset(self) -> None:
        self._match, self._steps = None, []

    def _check_script(self, state, ev):
        if own_eval_seen(state):
            self._reset()
            return None  # segwatch's own matrix has the word (the eval branch above)
        got = script_miou(state, ev)
        h = state.val_label_hist
        C = state.num_classes
        if got is None or not C or h.size == 0 or h.sum() <= 0:
            return None
        step, v = got
        if not eval_gate(state, step):
            self._reset()
            return None
        p = h[:C].astype(np.float64) / float(h.sum())
        expected = 100.0 * p / C
        d = np.abs(expected - v)
        order = np.argsort(d, kind="stable")
        c = int(order[0])
        if d[c] > self.SCRIPT_TOL or p[c] <= 0:
            self._reset()
            return None
        how = "unique best match"
        if self._train_top is not None:
            tc, tshare = self._train_top
            if tc != c or tshare < collapse_share(state):
                self._reset()
                return None  # the training predictions are not dominated by c
            how = "dominant class of the training predictions"
        elif len(order) > 1 and d[int(order[1])] < self.SCRIPT_SEPARATION:
            self._reset()
            return None  # another class matches about as well: no verdict
        if self._match != c:
            self._match, self._steps = c, []
        if not self._steps or self._steps[-1] != step:
            self._steps.append(step)
        if len(self._steps) < 2:
            return None
        return self.make(state, ev, {
            "source": "script output and validation labels",
            "class": c, "class_name": state.class_name(c), "num_classes": C,
            "p_c": r4(float(p[c])), "expected_miou": r4(float(expected[c])), "observed_miou": r4(v),
            "formula": "mIoU = 100 * p_c / C", "evaluations": len(self._steps),
            "steps": self._steps[-4:], "match": how,
        }, phase="val", step=step)


class MetricScriptDisagrees(Rule):
    """The script's printed mIoU vs segwatch's own, in both conventions (guide: NaN->0
    over all C; mmseg: mean over present classes; a value printed as a fraction, or
    parsed as one, is accepted too).

    Pairing: the shim's eval event and the script's output line travel separately and
    may arrive in either order, and the supervisor stamps the line with the latest step
    it knows. A script metric is paired with the latest evaluation if that one has the
    same step, or if training has not moved on since it; otherwise it waits for the next
    evaluation. It is judged against the paired evaluation and the one before it, and
    raises the finding only if it agrees with neither (so a line that arrives late can
    not cause a false alarm). Aborted evaluations are left to metric.eval_aborted.
    """
    id = "metric.script_disagrees"
    events = ("eval", "script_metric")

    def __init__(self) -> None:
        self._pending: deque = deque(maxlen=8)   # (step, value, line) before their eval
        self._evals: deque = deque(maxlen=2)     # the last two usable evaluations

    @staticmethod
    def _agrees(value: float, e: dict) -> bool:
        g, mm = e.get("miou"), e.get("miou_mmseg")
        cands = [value]
        if 0.0 <= value <= 1.0:
            cands.append(value * 100.0)
        if 0.0 <= value <= 100.0:
            cands.append(value / 100.0)
        for v in cands:
            if g is not None and abs(v - g) <= DISAGREE_POINTS:
                return True
            if finite(mm) and abs(v - mm) <= DISAGREE_POINTS:
                return True
        return False

    def _judge(self, state, ev, value: float, line, step: int):
        evals = list(self._evals)
        if not evals or any(self._agrees(value, e) for e in evals):
            return None
        e = evals[-1]
        g, mm = e.get("miou"), e.get("miou_mmseg")
        return self.make(state, ev, {
            "script_miou": r4(value), "segwatch_miou_guide": r4(g),
            "segwatch_miou_mmseg": r4(mm) if finite(mm) else None,
            "difference": r4(min(abs(value - g), abs(value - mm) if finite(mm) else math.inf)),
            "eval_index": e.get("index"), "eval_step": e.get("step"), "step": step, "line": line,
        }, phase="val", step=step)

    def check(self, state, ev):
        if ev["type"] == "script_metric":
            got = script_miou(state, ev)
            if got is None:
                return None
            step, v = got
            e = state.latest_eval()
            if e is not None and (e["step"] == step or state.step <= e["step"]):
                if e.get("aborted") or e.get("miou") is None:
                    return None
                return self._judge(state, ev, v, ev.get("line"), step)
            self._pending.append((step, v, ev.get("line")))
            return None
        e = state.latest_eval()
        if e is None:
            return None
        if e.get("aborted") or e.get("miou") is None:
            self._pending.clear()
            return None
        self._evals.append(e)
        mine = [p for p in self._pending if p[0] <= e["step"]]
        self._pending = deque((p for p in self._pending if p[0] > e["step"]), maxlen=8)
        for s, v, line in mine:
            f = self._judge(state, ev, v, line, s)
            if f is not None:
                return f
        return None


#: mIoU regressed: below this fraction of its best ...
REGRESS_FRACTION = 0.5
#: ... with a best of at least this many points (tiny early mIoUs are noise)
REGRESS_MIN_BEST = 5.0


class MetricMiouRegressed(Rule):
    """mIoU fell below half of its best after having been higher for at least one
    evaluation (a mid-run collapse: a stage switch, an LR jump). From segwatch's own
    evaluations; from the script's printed values only while segwatch saw no matrix.
    Evaluations of the same training step count once (the last)."""
    id = "metric.miou_regressed"
    events = ("eval", "script_metric")

    def __init__(self) -> None:
        self._own: dict = {"best": None, "best_step": None, "last_step": None}
        self._script: dict = {"best": None, "best_step": None, "last_step": None}

    def check(self, state, ev):
        if ev["type"] == "eval":
            if ev.get("aborted") or not state.evals:
                return None
            e = state.evals[-1]
            if e.get("miou") is None or e.get("pred_classes") is None or e.get("sanity"):
                return None
            step, value, track, source = e["step"], float(e["miou"]), self._own, "segwatch evaluations"
        else:
            got = script_miou(state, ev)
            if got is None or own_eval_seen(state):
                return None
            step, value = got
            if 0.0 <= value <= 1.0 and (self._script["best"] or 0.0) <= 1.0:
                value *= 100.0  # printed as a fraction
            track, source = self._script, "script output"
        best = track["best"]
        if best is None or value > best:
            track["best"], track["best_step"] = value, step
            return None
        if step == track["best_step"] or best < REGRESS_MIN_BEST or value >= REGRESS_FRACTION * best:
            return None
        return self.make(state, ev, {
            "source": source, "best": r4(best), "best_step": int(track["best_step"]),
            "now": r4(value), "step": int(step), "ratio": r4(value / best),
        }, phase="val", step=step)
