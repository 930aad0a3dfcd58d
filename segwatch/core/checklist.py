"""The guide's quick checklist, live: 5 pre-run items and 4 in-run items.

Each item is pending / ok / warn / fail with a one-line evidence string, derived from
RunState and its findings (``build_checklist(state)``; RunState.checklist calls it).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

STATES = ("pending", "ok", "warn", "fail")

ITEMS: tuple[tuple[str, str, str, str], ...] = (
    # id, phase, English title, Chinese title
    ("num_classes", "pre", "num_classes matches the model output", "num_classes 与模型输出一致"),
    ("ignore_label", "pre", "ignore label matches the data", "ignore_label 与数据一致"),
    ("learning_rate", "pre", "learning rate is sensible", "学习率合理"),
    ("pretrained_loaded", "pre", "pretrained weights loaded", "预训练权重加载成功"),
    ("augmentation_keeps_labels", "pre", "augmentation keeps labels intact", "数据增强不破坏标签"),
    ("loss_falling", "run", "loss is falling", "Loss 在下降"),
    ("grad_norm_in_range", "run", "gradient norm in range", "梯度范数合理"),
    ("predictions_diverse", "run", "predictions are diverse", "预测类别多样"),
    ("miou_changing", "run", "mIoU is changing", "mIoU 在变化"),
)
_TITLES = {i: {"en": en, "zh": zh} for i, _, en, zh in ITEMS}
_PHASE = {i: p for i, p, _, _ in ITEMS}


@dataclass
class ChecklistItem:
    id: str
    state: str = "pending"
    evidence: str = ""

    @property
    def phase(self) -> str:
        return _PHASE.get(self.id, "run")

    def title(self, lang: str = "en") -> str:
        t = _TITLES.get(self.id)
        return (t.get(lang) or t["en"]) if t else self.id

    def to_dict(self, lang: str = "en") -> dict:
        return {"id": self.id, "state": self.state, "evidence": self.evidence,
                "title": self.title(lang), "phase": self.phase}


def _first(state, *ids):
    for i in ids:
        f = state.findings.get(i)
        if f is not None:
            return f
    return None


def _fmt(x) -> str:
    if x is None:
        return "?"
    if isinstance(x, float):
        return f"{x:.3g}"
    return str(x)


def _num_classes(state) -> ChecklistItem:
    it = ChecklistItem("num_classes")
    f = _first(state, "config.num_classes_mismatch")
    if f:
        e = f.evidence
        it.state, it.evidence = "fail", f"model outputs {e.get('out_channels')} channels, config says {e.get('num_classes')}"
        return it
    f = _first(state, "label.out_of_range")
    if f:
        it.state, it.evidence = "fail", f"labels hold values outside {f.evidence.get('valid_range')}: {f.evidence.get('values')}"
        return it
    want, got = state.configured_num_classes, state.out_channels
    if got and want and got == want:
        it.state, it.evidence = "ok", f"model outputs {got} channels = num_classes"
    elif got and not want:
        it.state, it.evidence = "warn", f"num_classes not configured; using the logits' {got} channels"
    elif want:
        it.evidence = f"configured {want}; waiting for the model's output"
    else:
        it.evidence = "waiting for the model's output"
    return it


def _ignore_label(state) -> ChecklistItem:
    it = ChecklistItem("ignore_label")
    f = _first(state, "label.ignore_mismatch")
    if f:
        e = f.evidence
        it.state, it.evidence = "fail", f"data uses {e.get('data_value')}, config says {e.get('configured')}"
        return it
    f = _first(state, "label.all_ignored")
    if f:
        it.state, it.evidence = "fail", f"a batch is entirely ignore ({f.evidence.get('ignore_value')})"
        return it
    tot = state.label_totals["train"][0] + state.label_totals["val"][0]
    if tot <= 0:
        it.evidence = f"ignore_index {state.ignore_index!r}; waiting for labels"
        return it
    ign = state.label_totals["train"][1] + state.label_totals["val"][1]
    if state.ignore_is_auto:
        if state.inferred_ignore is not None:
            n = state.oor_totals.get(state.inferred_ignore, 0) + ign
            it.state, it.evidence = "ok", f"auto: inferred {state.inferred_ignore} ({100.0 * n / tot:.1f}% of label pixels)"
        else:
            it.state, it.evidence = "ok", "auto: no ignore value in the labels so far"
        return it
    it.state, it.evidence = "ok", f"ignore_index {state.ignore_index!r}: {100.0 * ign / tot:.1f}% of label pixels"
    return it


def _learning_rate(state) -> ChecklistItem:
    it = ChecklistItem("learning_rate")
    f = _first(state, "optim.lr_suspicious")
    if f:
        it.state, it.evidence = "warn", str(f.evidence.get("why", "suspicious learning rate"))
        return it
    if not state.lr:
        it.evidence = "waiting for the first optimizer step"
        return it
    lr = state.lr.last_value()
    exp = state.cfg("train", "expected_lr")
    it.state = "ok"
    it.evidence = f"lr {_fmt(lr)}" + (f" (expected {_fmt(exp)})" if exp else " (no expected_lr configured)")
    return it


def _pretrained(state) -> ChecklistItem:
    it = ChecklistItem("pretrained_loaded")
    f = _first(state, "model.pretrained_not_loaded")
    if f:
        e = f.evidence
        it.state, it.evidence = "fail", f"{e.get('loaded')}/{e.get('total')} keys loaded into {e.get('module')}"
        return it
    if state.state_dicts:
        d = state.state_dicts[-1]
        it.state, it.evidence = "ok", f"{d.get('loaded')}/{d.get('total')} keys loaded into {d.get('module')}"
        return it
    ended = state.status in ("finished", "killed", "failed", "lost")
    if ended or state.step > state.grace_steps:
        it.state, it.evidence = "warn", "no load_state_dict call seen: training from scratch?"
    else:
        it.evidence = "no load_state_dict call seen yet"
    return it


def _augmentation(state) -> ChecklistItem:
    it = ChecklistItem("augmentation_keeps_labels")
    f = _first(state, "label.misaligned", "label.interpolated", "label.shape_mismatch")
    if f:
        it.state = "fail" if f.severity == "error" else "warn"
        it.evidence = f"{f.id}: {f.evidence.get('why') or f.evidence.get('source') or ''}".rstrip(": ")
        return it
    if state.batches["train"] >= 5:
        it.state, it.evidence = "ok", f"{state.batches['train']} training batches checked"
    else:
        it.evidence = "waiting for training batches"
    return it


def _loss_falling(state) -> ChecklistItem:
    it = ChecklistItem("loss_falling")
    f = _first(state, "loss.nonfinite", "loss.diverging")
    if f:
        it.state, it.evidence = "fail", f"{f.id} since step {f.first_step}"
        return it
    f = _first(state, "loss.plateau")
    if f:
        it.state, it.evidence = "warn", f"loss flat over the first window (ratio {_fmt(f.evidence.get('ratio_last_to_first'))})"
        return it
    r = state.loss_ratio()
    if r is None:
        it.evidence = f"{len(state.loss)} loss samples so far"
    elif r < 0.98:
        it.state, it.evidence = "ok", f"loss {_fmt(state.loss.last_value())}, down {100 * (1 - r):.0f}% (last vs first quarter)"
    else:
        it.evidence = f"loss {_fmt(state.loss.last_value())}, not falling yet (ratio {r:.2f})"
    return it


def _grad(state) -> ChecklistItem:
    it = ChecklistItem("grad_norm_in_range")
    f = _first(state, "grad.nonfinite", "grad.exploding", "grad.vanishing")
    if f:
        it.state, it.evidence = "fail", f"{f.id}: grad norm {_fmt(f.evidence.get('grad_norm'))}"
        return it
    if not state.grad_norm:
        it.evidence = "no gradient norm sampled yet"
        return it
    g = state.grad_norm.last_value()
    lo = state.cfg("thresholds", "grad_norm_min", 1e-7)
    hi = state.cfg("thresholds", "grad_norm_max", 1000.0)
    inside = g is not None and lo <= g <= hi
    it.state = "ok" if inside else "warn"
    it.evidence = f"grad norm {_fmt(g)} (range {_fmt(lo)}..{_fmt(hi)})"
    return it


def _diverse(state) -> ChecklistItem:
    it = ChecklistItem("predictions_diverse")
    f = _first(state, "pred.collapse")
    if f:
        e = f.evidence
        it.state, it.evidence = "fail", f"only class {e.get('class')} ({e.get('class_name') or '?'}) predicted"
        return it
    f = _first(state, "pred.low_diversity")
    if f:
        it.state, it.evidence = "warn", f"{f.evidence.get('pred_classes')} classes predicted (< {f.evidence.get('min_pred_classes')})"
        return it
    k = int(state.cfg("thresholds", "min_pred_classes", 5))
    e = state.latest_eval()
    if e and e.get("pred_classes") is not None:
        n = e["pred_classes"]
        it.state = "ok" if n >= min(k, e.get("gt_classes") or k) else "pending"
        it.evidence = f"{n} classes predicted at evaluation {e.get('index')}"
        return it
    if state.pred_unique:
        n = int(state.pred_unique.last_value())
        gt = int(np.count_nonzero(state.gt_hist)) if state.gt_hist.size else k
        if n >= min(k, max(gt, 1)):
            it.state = "ok"
        it.evidence = f"{n} classes in the last training sample" + (
            " (grace window)" if state.step <= state.grace_steps and it.state == "pending" else "")
        return it
    it.evidence = "no prediction sampled yet"
    return it


def _miou(state) -> ChecklistItem:
    it = ChecklistItem("miou_changing")
    f = _first(state, "metric.cm_empty", "metric.eval_aborted", "metric.miou_stuck", "metric.single_class_signature")
    if f:
        it.state = "fail"
        if f.id == "metric.miou_stuck":
            it.evidence = f"mIoU {_fmt(f.evidence.get('value'))} over {f.evidence.get('evaluations')} evaluations"
        elif f.id == "metric.eval_aborted":
            it.evidence = f"evaluation raised {f.evidence.get('exception')}: printed mIoU is stale"
        elif f.id == "metric.cm_empty":
            it.evidence = f"empty confusion matrix: {f.evidence.get('why')}"
        else:
            it.evidence = f"mIoU = p_c/C = {_fmt(f.evidence.get('expected_miou'))}"
        return it
    vals = [g for _, g, _ in state.miou] or [v for _, v in state.script_metrics]
    if len(vals) >= 2:
        if max(vals) - min(vals) > 1e-9:
            it.state, it.evidence = "ok", f"mIoU {vals[0]:.2f} -> {vals[-1]:.2f} over {len(vals)} evaluations"
        else:
            it.state, it.evidence = "warn", f"mIoU {vals[-1]:.2f} unchanged over {len(vals)} evaluations"
    elif vals:
        it.evidence = f"one evaluation so far: mIoU {vals[0]:.2f}"
    else:
        it.evidence = "no evaluation yet"
    return it


_BUILDERS = (_num_classes, _ignore_label, _learning_rate, _pretrained, _augmentation,
             _loss_falling, _grad, _diverse, _miou)


def build_checklist(state) -> list[ChecklistItem]:
    return [b(state) for b in _BUILDERS]
