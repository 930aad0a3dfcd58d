"""The guide's quick checklist, live: 5 pre-run items and 4 in-run items.

Each item is pending / ok / warn / fail with a one-line evidence string in the state's
language (English or Chinese), derived from RunState and its findings
(``build_checklist(state)``; RunState.checklist calls it).
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
    # the step of the measured value the evidence quotes (a state reading), and whether it
    # is old (older than twice its probe's interval: the evidence then says "@ step N")
    step: int | None = None
    old: bool = False

    @property
    def phase(self) -> str:
        return _PHASE.get(self.id, "run")

    def title(self, lang: str = "en") -> str:
        t = _TITLES.get(self.id)
        return (t.get(lang) or t["en"]) if t else self.id

    def to_dict(self, lang: str = "en") -> dict:
        return {"id": self.id, "state": self.state, "evidence": self.evidence,
                "title": self.title(lang), "phase": self.phase, "step": self.step, "old": self.old}


def _first(state, *ids):
    for i in ids:
        f = state.findings.get(i)
        if f is not None:
            return f
    return None


#: evidence templates, English and Chinese (``str.format`` fields)
TEXT: dict[str, tuple[str, str]] = {
    "nc.mismatch": ("model outputs {got} channels, config says {want}", "模型输出 {got} 个通道，配置为 {want}"),
    "nc.oor": ("labels hold values outside {rng}: {values}", "标签中有超出 {rng} 的值：{values}"),
    "nc.ok": ("model outputs {got} channels = num_classes", "模型输出 {got} 个通道 = num_classes"),
    "nc.inferred": ("num_classes not configured; using the logits' {got} channels",
                    "未配置 num_classes；使用 logits 的 {got} 个通道"),
    "nc.wait_cfg": ("configured {want}; waiting for the model's output", "已配置 {want}；等待模型输出"),
    "nc.wait": ("waiting for the model's output", "等待模型输出"),
    "ig.mismatch": ("data uses {data}, config says {cfg}", "数据使用 {data}，配置为 {cfg}"),
    "ig.all": ("a batch is entirely ignore ({value})", "有批次全部为 ignore（{value}）"),
    "ig.wait": ("ignore_index {cfg}; waiting for labels", "ignore_index {cfg}；等待标签"),
    "ig.auto": ("auto: inferred {value} ({pct:.1f}% of label pixels)", "auto：推断为 {value}（占标签像素 {pct:.1f}%）"),
    "ig.auto_none": ("auto: no ignore value in the labels so far", "auto：目前标签中没有 ignore 值"),
    "ig.ok": ("ignore_index {cfg}: {pct:.1f}% of label pixels", "ignore_index {cfg}：占标签像素 {pct:.1f}%"),
    "lr.bad": ("{why}", "{why}"),
    "lr.wait": ("waiting for the first optimizer step", "等待第一次优化器更新"),
    "lr.ok": ("lr {lr} (expected {exp})", "学习率 {lr}（期望 {exp}）"),
    "lr.ok_noexp": ("lr {lr} (no expected_lr configured)", "学习率 {lr}（未配置 expected_lr）"),
    "pt.bad": ("{loaded}/{total} keys loaded into {module}", "{module} 只加载了 {loaded}/{total} 个键"),
    "pt.ok": ("{loaded}/{total} keys loaded into {module}", "{module} 加载了 {loaded}/{total} 个键"),
    "pt.none": ("no load_state_dict call seen: training from scratch?", "未见 load_state_dict 调用：是否在从头训练？"),
    "pt.wait": ("no load_state_dict call seen yet", "尚未见到 load_state_dict 调用"),
    "pt.scratch": ("training from scratch on purpose (train.pretrained: none)",
                   "按配置有意从头训练（train.pretrained: none）"),
    "aug.bad": ("{id}: {why}", "{id}：{why}"),
    "aug.ok": ("{n} training batches checked", "已检查 {n} 个训练批次"),
    "aug.wait": ("waiting for training batches", "等待训练批次"),
    "loss.bad": ("{id} since step {step}", "自第 {step} 步起 {id}"),
    "loss.flat": ("loss flat over the first window (ratio {ratio})", "前期 Loss 没有下降（比值 {ratio}）"),
    "loss.wait": ("{n} loss samples so far", "目前有 {n} 个 loss 样本"),
    "loss.ok": ("loss {loss}, down {pct:.0f}% (last vs first quarter)", "Loss {loss}，下降了 {pct:.0f}%（末四分之一对比首四分之一）"),
    "loss.rose": ("loss rose from {lo} (step {s0}) to {now} (step {s1})",
                  "Loss 从 {lo}（第 {s0} 步）升到 {now}（第 {s1} 步）"),
    "loss.notyet": ("loss {loss}, not falling yet (ratio {ratio:.2f})", "Loss {loss}，尚未下降（比值 {ratio:.2f}）"),
    "grad.bad": ("{id}: grad norm {g}", "{id}：梯度范数 {g}"),
    "grad.wait": ("no gradient norm sampled yet", "尚未采样到梯度范数"),
    "grad.val": ("grad norm {g} (range {lo}..{hi})", "梯度范数 {g}（范围 {lo}..{hi}）"),
    "pred.collapse": ("class {c} ({name}) is {share:.1f}% of the predictions at step {step}",
                      "第 {step} 步类别 {c}（{name}）占预测的 {share:.1f}%"),
    "pred.top": (": class {c} is {share:.1f}%", "：类别 {c} 占 {share:.1f}%"),
    "pred.low": ("{n} classes predicted (< {k})", "只预测出 {n} 个类别（< {k}）"),
    "pred.eval": ("{n} classes predicted at evaluation {i}", "第 {i} 次评估预测出 {n} 个类别"),
    "pred.train": ("{n} classes in the last training sample", "最近一次训练采样中有 {n} 个类别"),
    "pred.stray": (" (+{n} with stray pixels)", "（另有 {n} 个类别仅有零星像素）"),
    "pred.grace": (" (grace window)", "（宽限期内）"),
    "pred.wait": ("no prediction sampled yet", "尚未采样到预测"),
    "miou.stuck": ("mIoU {v} over {n} evaluations", "mIoU 连续 {n} 次评估都是 {v}"),
    "miou.aborted": ("evaluation raised {exc}: printed mIoU is stale", "评估抛出 {exc}：打印的 mIoU 是旧值"),
    "miou.aborted_end": ("the run ended with {exc} raised in evaluation", "运行因评估中抛出的 {exc} 而终止"),
    "miou.empty": ("empty confusion matrix: {why}", "混淆矩阵为空：{why}"),
    "miou.sig": ("mIoU = p_c/C = {v}", "mIoU = p_c/C = {v}"),
    "miou.ok": ("rising: mIoU {a:.2f} -> {b:.2f} over {n} evaluations", "上升：mIoU 在 {n} 次评估中从 {a:.2f} 变为 {b:.2f}"),
    "miou.flat": ("flat: mIoU {b:.2f} over the last {n} evaluations (from {a:.2f})",
                  "持平：最近 {n} 次评估 mIoU 为 {b:.2f}（起始 {a:.2f}）"),
    "miou.falling": ("falling: best {best:.2f} at step {s0}, now {b:.2f} at step {s1}",
                     "下降：第 {s0} 步最好为 {best:.2f}，第 {s1} 步为 {b:.2f}"),
    "miou.same": ("mIoU {b:.2f} unchanged over {n} evaluations", "mIoU 在 {n} 次评估中保持 {b:.2f} 不变"),
    "miou.one": ("one evaluation so far: mIoU {a:.2f}", "目前只有一次评估：mIoU {a:.2f}"),
    "miou.wait": ("no evaluation yet", "尚未评估"),
    "old": (" @ step {step}", "（第 {step} 步的值）"),
}


def _t(state, key: str, **kw) -> str:
    en, zh = TEXT[key]
    tmpl = zh if getattr(state, "lang", "en") == "zh" else en
    if tmpl is zh:   # a rule's phrase quoted here (a finding's `why`) in Chinese too
        from .wording import evidence_value
        kw = {k: evidence_value(v, "zh") for k, v in kw.items()}
    try:
        return tmpl.format(**kw)
    except (KeyError, ValueError, TypeError, IndexError):  # an odd value: keep the words
        return tmpl


def _quote(it: ChecklistItem, state, name: str) -> None:
    """The item's evidence quotes the state reading ``name``: keep its step and age."""
    r = state.readings.get(name) if hasattr(state, "readings") else None
    if r is not None:
        it.step = r.step
        it.old = bool(state.is_old(r))


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
        it.state, it.evidence = "fail", _t(state, "nc.mismatch", got=e.get("out_channels"), want=e.get("num_classes"))
        return it
    f = _first(state, "label.out_of_range")
    if f:
        it.state = "fail"
        it.evidence = _t(state, "nc.oor", rng=f.evidence.get("valid_range"), values=f.evidence.get("values"))
        return it
    want, got = state.configured_num_classes, state.out_channels
    if got and want and got == want:
        it.state, it.evidence = "ok", _t(state, "nc.ok", got=got)
    elif got and not want:
        it.state, it.evidence = "warn", _t(state, "nc.inferred", got=got)
    elif want:
        it.evidence = _t(state, "nc.wait_cfg", want=want)
    else:
        it.evidence = _t(state, "nc.wait")
    return it


def _ignore_label(state) -> ChecklistItem:
    it = ChecklistItem("ignore_label")
    f = _first(state, "label.ignore_mismatch")
    if f:
        e = f.evidence
        it.state, it.evidence = "fail", _t(state, "ig.mismatch", data=e.get("data_value"), cfg=e.get("configured"))
        return it
    f = _first(state, "label.all_ignored")
    if f:
        it.state, it.evidence = "fail", _t(state, "ig.all", value=f.evidence.get("ignore_value"))
        return it
    tot = state.label_totals["train"][0] + state.label_totals["val"][0]
    if tot <= 0:
        it.evidence = _t(state, "ig.wait", cfg=repr(state.ignore_index))
        return it
    ign = state.label_totals["train"][1] + state.label_totals["val"][1]
    if state.ignore_is_auto:
        if state.inferred_ignore is not None:
            n = state.oor_totals.get(state.inferred_ignore, 0) + ign
            it.state, it.evidence = "ok", _t(state, "ig.auto", value=state.inferred_ignore, pct=100.0 * n / tot)
        else:
            it.state, it.evidence = "ok", _t(state, "ig.auto_none")
        return it
    it.state, it.evidence = "ok", _t(state, "ig.ok", cfg=repr(state.ignore_index), pct=100.0 * ign / tot)
    return it


def _learning_rate(state) -> ChecklistItem:
    it = ChecklistItem("learning_rate")
    f = _first(state, "optim.lr_suspicious")
    if f:
        it.state, it.evidence = "warn", _t(state, "lr.bad", why=f.evidence.get("why", "suspicious learning rate"))
        return it
    if not state.lr:
        it.evidence = _t(state, "lr.wait")
        return it
    lr = state.lr.last_value()
    exp = state.cfg("train", "expected_lr")
    _quote(it, state, "lr")
    it.state = "ok"
    it.evidence = _t(state, "lr.ok", lr=_fmt(lr), exp=_fmt(exp)) if exp else _t(state, "lr.ok_noexp", lr=_fmt(lr))
    return it


def _pretrained(state) -> ChecklistItem:
    it = ChecklistItem("pretrained_loaded")
    f = _first(state, "model.pretrained_not_loaded")
    if f:
        e = f.evidence
        it.state = "fail"
        it.evidence = _t(state, "pt.bad", loaded=e.get("loaded"), total=e.get("total"), module=e.get("module"))
        return it
    if state.state_dicts:
        d = state.state_dicts[-1]
        it.state = "ok"
        it.evidence = _t(state, "pt.ok", loaded=d.get("loaded"), total=d.get("total"), module=d.get("module"))
        return it
    if str(state.cfg("train", "pretrained") or "").lower() == "none":
        it.state, it.evidence = "ok", _t(state, "pt.scratch")   # said so in the config
        return it
    ended = state.status in ("finished", "killed", "failed", "lost")
    if ended or state.step > state.grace_steps:
        it.state, it.evidence = "warn", _t(state, "pt.none")
    else:
        it.evidence = _t(state, "pt.wait")
    return it


def _augmentation(state) -> ChecklistItem:
    it = ChecklistItem("augmentation_keeps_labels")
    f = _first(state, "label.misaligned", "label.interpolated", "label.shape_mismatch")
    if f:
        it.state = "fail" if f.severity == "error" else "warn"
        it.evidence = _t(state, "aug.bad", id=f.id, why=f.evidence.get("why") or f.evidence.get("source") or "")
        return it
    if state.batches["train"] >= 5:
        it.state, it.evidence = "ok", _t(state, "aug.ok", n=state.batches["train"])
        _quote(it, state, "labels")
    else:
        it.evidence = _t(state, "aug.wait")
    return it


def _loss_rise(state) -> tuple[float, int, float, int] | None:
    """The newest loss evidence against the older: (lowest level, its step, recent level,
    recent step) when the recent level (median of the last 8 finite samples) rose above
    1.5x the lowest earlier level (medians of 8), else None."""
    steps, vals = state.loss.steps(), state.loss.values()
    ok = np.isfinite(vals)
    steps, vals = steps[ok], vals[ok]
    w = 8
    if len(vals) < 3 * w:
        return None
    recent = float(np.median(vals[-w:]))
    # medians of windows of w samples, every w/2, before the last window (one numpy call)
    wins = np.lib.stride_tricks.sliding_window_view(vals[:len(vals) - w], w)[:: w // 2]
    meds = np.median(wins, axis=1)
    i = int(np.argmin(meds))
    low, low_step = float(meds[i]), int(steps[i * (w // 2) + w - 1])
    if recent > 1.5 * low and recent - low > 1e-6:
        return low, low_step, recent, int(steps[-1])
    return None


def _loss_falling(state) -> ChecklistItem:
    it = ChecklistItem("loss_falling")
    f = _first(state, "loss.nonfinite", "loss.diverging")
    if f:
        it.state, it.evidence = "fail", _t(state, "loss.bad", id=f.id, step=f.first_step)
        it.step = f.last_step
        return it
    f = _first(state, "loss.plateau")
    if f:
        it.state, it.evidence = "warn", _t(state, "loss.flat", ratio=_fmt(f.evidence.get("ratio_last_to_first")))
        it.step = f.last_step
        return it
    r = state.loss_ratio()
    _quote(it, state, "loss")
    rise = _loss_rise(state)
    if rise is not None:
        # the newest losses contradict an overall fall: say so, not "falling"
        it.state = "warn"
        it.evidence = _t(state, "loss.rose", lo=_fmt(rise[0]), s0=rise[1], now=_fmt(rise[2]), s1=rise[3])
    elif r is None:
        it.evidence = _t(state, "loss.wait", n=len(state.loss))
    elif r < 0.98:
        it.state, it.evidence = "ok", _t(state, "loss.ok", loss=_fmt(state.loss.last_value()), pct=100 * (1 - r))
    else:
        it.state = "warn"
        it.evidence = _t(state, "loss.notyet", loss=_fmt(state.loss.last_value()), ratio=r)
    return it


def _grad(state) -> ChecklistItem:
    it = ChecklistItem("grad_norm_in_range")
    f = _first(state, "grad.nonfinite", "grad.exploding", "grad.vanishing")
    if f:
        it.state, it.evidence = "fail", _t(state, "grad.bad", id=f.id, g=_fmt(f.evidence.get("grad_norm")))
        return it
    if not state.grad_norm:
        it.evidence = _t(state, "grad.wait")
        return it
    g = state.grad_norm.last_value()
    _quote(it, state, "grad_norm")
    lo = state.cfg("thresholds", "grad_norm_min", 1e-7)
    hi = state.cfg("thresholds", "grad_norm_max", 1000.0)
    inside = g is not None and lo <= g <= hi
    it.state = "ok" if inside else "warn"
    it.evidence = _t(state, "grad.val", g=_fmt(g), lo=_fmt(lo), hi=_fmt(hi))
    return it


def _newer(f, step: int | None) -> bool:
    """Is finding ``f`` at least as new as the reading of ``step`` (None: no reading)?"""
    return f is not None and (step is None or int(f.last_step or f.first_step) >= step)


def _diverse(state) -> ChecklistItem:
    """From the newest evidence: the one "preds" reading (the last training sample, or the
    last evaluation pass when newer; the header and the Preds panel show it too), unless a
    finding is at least as new. A collapse is judged as the rules judge it (top class share,
    stray pixels tolerated)."""
    from .diagnosis.preds import collapse_share, dominance, effective_classes

    it = ChecklistItem("predictions_diverse")
    r = state.readings.get("preds") if hasattr(state, "readings") else None
    p = r.value if r is not None else None
    rstep = r.step if r is not None else None
    fc, fl = _first(state, "pred.collapse"), _first(state, "pred.low_diversity")
    if _newer(fc, rstep):
        e = fc.evidence
        it.state, it.step = "fail", fc.last_step
        it.evidence = _t(state, "pred.collapse", c=e.get("class"), name=e.get("class_name") or f"class {e.get('class')}",
                         share=100.0 * float(e.get("share") or 0), step=fc.last_step)
        return it
    if _newer(fl, rstep):
        it.state, it.step = "warn", fl.last_step
        it.evidence = _t(state, "pred.low", n=fl.evidence.get("pred_classes"), k=fl.evidence.get("min_pred_classes"))
        return it
    if not p:
        it.evidence = _t(state, "pred.wait")
        return it
    _quote(it, state, "preds")
    k = int(state.cfg("thresholds", "min_pred_classes", 5))
    hist = np.asarray(p.get("hist") if p.get("hist") is not None else [], dtype=np.int64)
    gt = p.get("gt_hist")
    gt = np.asarray(gt, dtype=np.int64) if gt is not None and len(gt) else None
    d = dominance(hist, gt, collapse_share(state)) if hist.size else None
    n = len(effective_classes(hist)) if hist.size else int(p.get("unique") or 0)
    young = p.get("phase") == "train" and (rstep or 0) <= state.grace_steps
    it.evidence = (_t(state, "pred.eval", n=n, i=p.get("eval_index")) if p.get("phase") == "val"
                   else _t(state, "pred.train", n=n))
    # classes under the stray share count for neither rule; say they exist, so that the line
    # agrees with the confusion matrix, which counts every predicted pixel
    stray = int(np.count_nonzero(hist)) - n if hist.size else 0
    if stray > 0:
        it.evidence += _t(state, "pred.stray", n=stray)
    if d is not None:
        # one dominant class, not (yet) a finding (grace window, persistence): a warning
        # that names it; "fail" is left to pred.collapse so the two never disagree
        it.state = "warn"
        it.evidence += _t(state, "pred.top", c=d["class"], share=100.0 * d["share"])
    else:
        it.state = "ok" if n >= min(k, max(p.get("gt_classes") or k, 1)) else "warn"
    if young and it.state != "ok":
        it.evidence += _t(state, "pred.grace")
    return it


def _miou_series(state) -> list[tuple[int, float]]:
    """(step, mIoU) per distinct evaluation: segwatch's own, else the script's printed ones
    (one evaluation printed in several lines counts once: the last)."""
    pts = [(int(s), float(g)) for s, g, _ in state.miou] or [(int(s), float(v)) for s, v in state.script_metrics]
    out: list[tuple[int, float]] = []
    for s, v in pts:
        if out and out[-1][0] == s:
            out[-1] = (s, v)
        else:
            out.append((s, v))
    return out


def _miou(state) -> ChecklistItem:
    """Rising, flat or falling, from the newest evaluations; a finding decides while no
    newer evaluation contradicts it."""
    it = ChecklistItem("miou_changing")
    pts = _miou_series(state)
    last_step = pts[-1][0] if pts else None
    f = _first(state, "metric.cm_empty", "metric.eval_aborted", "metric.miou_regressed", "metric.miou_stuck",
               "metric.single_class_signature")
    if _newer(f, last_step):
        it.state, it.step = "fail", f.last_step
        e = f.evidence
        if f.id == "metric.miou_stuck":
            it.evidence = _t(state, "miou.stuck", v=_fmt(e.get("value")), n=e.get("evaluations"))
        elif f.id == "metric.eval_aborted":
            it.evidence = _t(state, "miou.aborted_end" if e.get("outcome") == "ended_run" else "miou.aborted",
                             exc=e.get("exception"))
        elif f.id == "metric.cm_empty":
            it.evidence = _t(state, "miou.empty", why=e.get("why"))
        elif f.id == "metric.miou_regressed":
            it.evidence = _t(state, "miou.falling", best=e.get("best"), s0=e.get("best_step"),
                             b=e.get("now"), s1=e.get("step"))
        else:
            it.evidence = _t(state, "miou.sig", v=_fmt(e.get("expected_miou")))
        return it
    if not pts:
        it.evidence = _t(state, "miou.wait")
        return it
    it.step = last_step
    vals = [v for _, v in pts]
    if len(vals) == 1:
        it.state, it.evidence = "ok", _t(state, "miou.one", a=vals[0])
        return it
    best_i = int(np.argmax(vals))
    best, now = vals[best_i], vals[-1]
    tol = max(0.5, 0.02 * abs(best))
    if best_i < len(vals) - 1 and now < best - max(1.0, 0.1 * best):
        it.state = "fail" if now < 0.5 * best else "warn"
        it.evidence = _t(state, "miou.falling", best=best, s0=pts[best_i][0], b=now, s1=last_step)
    elif max(vals) - min(vals) <= 1e-9:
        it.state, it.evidence = "warn", _t(state, "miou.same", b=now, n=len(vals))
    elif len(vals) >= 3 and max(vals[-3:]) - min(vals[-3:]) <= tol:
        # flat over the last evaluations: fine near a best reached after a rise (converged)
        risen = best - vals[0] > tol
        it.state = "ok" if risen and now >= best - tol else "warn"
        it.evidence = _t(state, "miou.flat", a=vals[0], b=now, n=3)
    else:
        it.state, it.evidence = "ok", _t(state, "miou.ok", a=vals[0], b=now, n=len(vals))
    return it


_BUILDERS = (_num_classes, _ignore_label, _learning_rate, _pretrained, _augmentation,
             _loss_falling, _grad, _diverse, _miou)


def build_checklist(state) -> list[ChecklistItem]:
    items = [b(state) for b in _BUILDERS]
    for it in items:
        if it.old and it.step is not None:
            it.evidence += _t(state, "old", step=it.step)
    return items
