"""User-interface strings (English / Chinese) and number formatting for the app.

Finding advice and checklist titles come from core (``Finding.advice(lang)``,
``ChecklistItem.title(lang)``); this module only holds the app's own labels.
"""
from __future__ import annotations

import math
from typing import Any

_UI: dict[str, tuple[str, str]] = {
    # tabs
    "tab.overview": ("Overview", "总览"),
    "tab.data": ("Data", "数据"),
    "tab.loss": ("Loss", "损失/梯度"),
    "tab.preds": ("Preds", "预测"),
    "tab.confusion": ("Confusion", "混淆矩阵"),
    "tab.findings": ("Findings", "诊断"),
    "tab.output": ("Output", "输出"),
    "tab.gpu": ("GPU", "GPU"),
    # headings
    "h.checklist": ("Checklist", "检查清单"),
    "h.findings": ("Findings", "诊断结果"),
    "h.labels": ("Labels (last sampled batch)", "标签（最近采样的batch）"),
    "h.class_hist": ("Label class histogram (all sampled batches)", "标签类别分布（全部采样batch）"),
    "h.inputs": ("Inputs (last sampled batch)", "输入（最近采样的batch）"),
    "h.loss": ("Loss", "Loss"),
    "h.grad": ("Gradient norm (log scale)", "梯度总范数（对数坐标）"),
    "h.layers": ("Per-layer gradient norms (last sampled step)", "各层梯度范数（最近采样的一步）"),
    "h.pred_unique": ("Predicted classes per sample", "每次采样预测的类别数"),
    "h.dominant": ("Dominant class share", "最多类别的像素占比"),
    "h.pred_vs_gt": ("Predicted vs ground-truth class distribution (last sample)",
                     "预测与真实类别分布（最近一次采样）"),
    "h.heatmap": ("Confusion matrix (rows = GT, columns = prediction, shade = share of the GT row)",
                  "混淆矩阵（行=真实，列=预测，颜色=占该行比例）"),
    "h.per_class": ("Per-class IoU", "各类别IoU"),
    "h.output": ("Child output", "子进程输出"),
    # words
    "none_yet": ("nothing yet", "暂无"),
    "no_findings": ("no findings so far", "暂未发现问题"),
    "no_eval": ("no evaluation yet: the matrix appears after the first validation pass",
                "尚无评估：第一次验证结束后显示混淆矩阵"),
    "no_labels": ("no label batch sampled yet", "尚未采样到标签"),
    "no_inputs": ("no input statistics yet", "尚无输入统计"),
    "no_preds": ("no predictions sampled yet", "尚未采样到预测"),
    "evidence": ("evidence", "证据"),
    "advice": ("advice", "建议"),
}


def ui(key: str, lang: str = "en") -> str:
    pair = _UI.get(key)
    if pair is None:
        return key
    return pair[1] if lang == "zh" else pair[0]


def _number(value: Any) -> float | str:
    """``value`` as a float, or the text every formatter shows instead: "–" for None, the
    value itself when it is not a number."""
    if value is None:
        return "–"
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


def fnum(value: Any, digits: int = 4) -> str:
    """A compact human number: 0.1234, 1.23e-08, 12,345, nan."""
    v = _number(value)
    if isinstance(v, str):
        return v
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    if v == 0:
        return "0"
    if float(v).is_integer() and abs(v) < 1e9:
        return f"{int(v):,}"
    a = abs(v)
    if a >= 1e5 or a < 1e-3:
        return f"{v:.{max(1, digits - 2)}e}"
    return f"{v:.{digits}g}"


def fint(value: Any) -> str:
    if value is None:
        return "–"
    try:
        return f"{int(value):,}"
    except (TypeError, ValueError):
        return str(value)


def fpct(value: Any, digits: int = 1) -> str:
    """A fraction (0..1) as a percentage."""
    v = _number(value)
    if isinstance(v, str):
        return v
    if math.isnan(v):
        return "nan"
    return f"{v * 100:.{digits}f}%"


def fbytes(n: Any) -> str:
    v = _number(n)
    if isinstance(v, str):
        return v
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(v) < 1024 or unit == "TiB":
            return f"{v:.0f} {unit}" if unit == "B" else f"{v:.1f} {unit}"
        v /= 1024
    return f"{v:.1f} TiB"


def fduration(seconds: Any) -> str:
    s = _number(seconds)
    if isinstance(s, str):
        return s
    if not math.isfinite(s) or s < 0:
        return "–"
    s = int(round(s))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}:{m:02d}:{sec:02d}"


def class_name(names: Any, idx: int) -> str:
    """The name of class ``idx`` (or its number when there are no names)."""
    try:
        if names and 0 <= idx < len(names) and names[idx]:
            return str(names[idx])
    except TypeError:
        pass
    return f"class {idx}"


def compact_evidence(evidence: Any, limit: int = 6) -> str:
    """``key=value`` pairs of a finding's evidence dict, for one line."""
    if not isinstance(evidence, dict):
        return "" if evidence is None else str(evidence)
    parts = []
    for key, val in list(evidence.items())[:limit]:
        if isinstance(val, float):
            val = fnum(val)
        elif isinstance(val, (list, tuple)):
            shown = ", ".join(fnum(v) if isinstance(v, float) else str(v) for v in list(val)[:6])
            val = f"[{shown}{', …' if len(val) > 6 else ''}]"
        elif isinstance(val, dict):
            shown = ", ".join(f"{k}: {v}" for k, v in list(val.items())[:4])
            val = "{" + shown + (", …" if len(val) > 4 else "") + "}"
        parts.append(f"{key}={val}")
    if isinstance(evidence, dict) and len(evidence) > limit:
        parts.append("…")
    return "  ".join(parts)
