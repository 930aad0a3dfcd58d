"""The loss function as a cause: what the shim saw of the training's loss (``lossfn`` events,
``RunState.lossfn``) in the evidence and advice of the findings it may explain, and
``loss.ignore_index_mismatch``.

``LossAware`` is mixed into the rules whose findings the loss can explain; their ``make``
adds, where it applies:

* ``grad.*`` / ``loss.diverging`` / ``loss.nonfinite``: a class weight >= ``WEIGHT_RATIO`` x
  the median weight (``loss_cause: class_weight``): the weight, not the LR, is the first
  thing to check (issue 17: CE weight 100 on one class was advised "lower the LR");
* ``pred.*``: the dominant predicted class has the largest weight (``dominant_class_weight``),
  else a weight >= ``WEIGHT_RATIO`` x the median (``class_weight``), or the loss has no class weights while one class holds >= ``IMBALANCE_SHARE`` of the
  labelled training pixels (``no_class_weights``);
* ``label.*`` / ``metric.cm_empty``: the loss's ``ignore_index`` next to the data's ignore value
  (``loss_ignore``: when they differ);
* ``model.output_is_probability``: label smoothing; ``pred.*`` / ``loss.*``: auxiliary heads
  (several loss calls per step, a dict or tuple output).
"""
from __future__ import annotations

import numpy as np

from .base import Rule, ffloat, fint, r4

#: a class weight this many times the median weight is named as the likely cause
WEIGHT_RATIO = 20.0
#: without class weights, the top label class holding this share of the labelled training
#: pixels is named (healthy street scenes: road ~0.35-0.4; the faults' imbalance: >= 0.9)
IMBALANCE_SHARE = 0.7

_GRAD_IDS = ("grad.exploding", "grad.nonfinite", "loss.diverging", "loss.nonfinite")
_PRED_IDS = ("pred.collapse", "pred.low_diversity", "metric.single_class_signature")
_IGNORE_IDS = ("label.out_of_range", "label.ignore_mismatch", "label.all_ignored", "metric.cm_empty")


def loss_calls(state) -> list[dict]:
    lf = getattr(state, "lossfn", None)
    calls = lf.get("calls") if isinstance(lf, dict) else None
    return [c for c in calls if isinstance(c, dict)] if isinstance(calls, list) else []


def main_call(state) -> dict | None:
    """The call that explains most: the one with the most skewed class weight, else the first."""
    calls = loss_calls(state)
    if not calls:
        return None
    weighted = [c for c in calls if isinstance(c.get("weight"), dict)]
    if weighted:
        return max(weighted, key=lambda c: ffloat(c["weight"].get("ratio")) or 0.0)
    return calls[0]


def output_text(out) -> str | None:
    """``dict[out,aux]`` / ``tuple[2]`` / ``torch.Tensor``: the model's output in training."""
    if not isinstance(out, dict):
        return None
    kind = out.get("kind")
    if kind == "dict":
        return "dict[" + ",".join(str(k) for k in out.get("keys") or []) + "]"
    if kind in ("tuple", "list"):
        return f"{kind}[{fint(out.get('n'))}]"
    if kind == "tensor":
        return "torch.Tensor"
    return None


def _aux(state) -> dict:
    lf = state.lossfn or {}
    n = fint(lf.get("calls_per_step"))
    out = lf.get("output") if isinstance(lf.get("output"), dict) else {}
    several = (n is not None and n >= 2) or out.get("kind") in ("tuple", "list") and (fint(out.get("n")) or 0) >= 2 \
        or (out.get("kind") == "dict" and len(out.get("keys") or []) >= 2)
    if not several:
        return {}
    return {"loss_calls_per_step": n, "model_output": output_text(out)}


def _dominant_pred(state, f) -> int | None:
    c = fint(f.evidence.get("class"))
    if c is not None:
        return c
    h = None
    if f.phase == "val" and state.confusion is not None:
        h = np.asarray(state.confusion).sum(axis=0)
    elif len(state.pred_hist):
        h = state.pred_hist
    return int(np.argmax(h)) if h is not None and np.sum(h) > 0 else None


def add_loss_cause(state, f) -> None:
    """Put the loss's configuration into ``f.evidence`` where it may be the cause."""
    call = main_call(state)
    if call is None:
        return
    ev = f.evidence
    w = call.get("weight") if isinstance(call.get("weight"), dict) else None
    ratio = ffloat(w.get("ratio")) if w else None
    if f.id in _GRAD_IDS or f.id in _PRED_IDS or f.id in _IGNORE_IDS or f.id == "model.output_is_probability":
        ev["loss_fn"] = call.get("fn")
    if f.id in _GRAD_IDS:
        if ratio is not None and ratio >= WEIGHT_RATIO:
            c = fint(w.get("argmax"))
            ev.update(loss_cause="class_weight", loss_weight_class=c, loss_weight_class_name=state.class_name(c),
                      loss_weight_ratio=r4(ratio), loss_weight_max=r4(ffloat(w.get("max"))))
        ev.update(_aux(state))
    elif f.id in _PRED_IDS:
        dom = _dominant_pred(state, f)
        if w is not None and dom is not None and fint(w.get("argmax")) == dom and ratio is not None and ratio > 1.5:
            ev.update(loss_cause="dominant_class_weight", loss_weight_class=dom,
                      loss_weight_class_name=state.class_name(dom), loss_weight_ratio=r4(ratio))
        elif ratio is not None and ratio >= WEIGHT_RATIO:
            # one huge weight skews what is predicted, whichever class ends up dominant
            c = fint(w.get("argmax"))
            ev.update(loss_cause="class_weight", loss_weight_class=c, loss_weight_class_name=state.class_name(c),
                      loss_weight_ratio=r4(ratio), loss_weight_max=r4(ffloat(w.get("max"))))
        elif w is None and len(state.label_hist) and state.label_hist.sum() > 0:
            h = state.label_hist
            top = int(np.argmax(h))
            share = float(h[top] / h.sum())
            if share >= IMBALANCE_SHARE:
                ev.update(loss_cause="no_class_weights", label_top_class=top,
                          label_top_class_name=state.class_name(top), label_top_share=r4(share))
        ev.update(_aux(state))
    elif f.id in _IGNORE_IDS:
        li = fint(call.get("ignore_index"))
        ev["loss_ignore_index"] = li
        # the value the labels use: what label.ignore_mismatch found in them, else the one in force
        data = fint(ev.get("data_value"))
        if data is None:
            data = state.effective_ignore if state.effective_ignore is not None else state.inferred_ignore
        if li is not None and data is not None and li != data:
            ev.update(loss_cause="loss_ignore", data_ignore=data)
    elif f.id == "model.output_is_probability":
        ls = ffloat(call.get("label_smoothing"))
        if ls:
            ev["loss_label_smoothing"] = ls


class LossAware:
    """Mixin for rules (before ``Rule`` in the bases): their findings name the loss's
    configuration where it is the likely cause."""

    def make(self, state, event, evidence, **kw):
        f = super().make(state, event, evidence, **kw)
        try:
            add_loss_cause(state, f)
        except Exception as exc:      # never lose the finding over its enrichment
            state._note_error(f"loss cause {f.id}: {type(exc).__name__}: {exc}")
        return f


def _ignore_among(state, vals: list[int], loss_ignore: int | None) -> int | None:
    """The value among the out-of-range targets that fills the ignore areas: the configured
    or inferred one, else the usual 255 / -1, else a lone value that looks like an ignore
    marker (an unusual 250: ``is_ignore_candidate``) while the loss does not already ignore
    the data's ignore value.  None otherwise: those values are class ids the labels should
    not hold (Cityscapes raw ids 21..33 not mapped to train ids, a label C from a head one
    class short), not an ignore value the loss misses, and ``ignore_index=21`` would hide
    real pixels; label.out_of_range names them."""
    data = state.effective_ignore
    if data is not None and data in vals:
        return data
    usual = next((v for v in vals if v in (255, -1)), None)
    if usual is not None:
        return usual
    if len(vals) == 1 and state.is_ignore_candidate(vals[0]) and (data is None or loss_ignore != data):
        return vals[0]
    return None


class LossIgnoreIndexMismatch(Rule):
    """The loss receives target values outside 0..C-1 that are not its ``ignore_index``: the
    labels' ignore value (255) is not the loss's (``CrossEntropyLoss`` defaults to -100). On
    CPU the loss raises "Target 255 is out of bounds", on CUDA a device-side assert; seen by
    the shim on the target itself, before the call."""
    id = "loss.ignore_index_mismatch"
    events = ("lossfn",)

    def check(self, state, ev):
        calls = ev.get("calls")
        if not isinstance(calls, list):
            return None
        for c in calls:
            if not isinstance(c, dict):
                continue
            vals = c.get("target_oor")
            if not isinstance(vals, list) or not vals:
                continue
            shape = c.get("input_shape") if isinstance(c.get("input_shape"), list) else []
            C = fint(shape[1]) if len(shape) > 1 else None
            li = fint(c.get("ignore_index"))
            vals = [fint(v) for v in vals if fint(v) is not None]
            data = _ignore_among(state, vals, li)
            if data is None:
                continue  # class ids out of range, no ignore value among them: label.out_of_range
            return self.make(state, ev, {
                "loss_fn": c.get("fn"), "loss_ignore_index": li, "target_values": vals,
                "num_classes": C, "valid_range": f"0..{C - 1}" if C else None, "data_ignore": data,
                "suggest": f"ignore_index={data}",
            })
        return None


__all__ = ["LossAware", "LossIgnoreIndexMismatch", "add_loss_cause", "main_call", "output_text",
           "WEIGHT_RATIO", "IMBALANCE_SHARE"]
