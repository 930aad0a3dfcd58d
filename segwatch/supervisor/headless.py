"""Plain-text views of a run for terminals without the app (``--headless``, logs, CI).

    [segwatch] step 120 | loss 1.234 | grad 3.2e+00 | pred classes 7/37 | mIoU 12.3% | 10.2 it/s
    [segwatch] ERROR pred.collapse at step 57: the model predicts one class ... — advice
"""
from __future__ import annotations

import math
from typing import Any

from .corelink import finite, last_value

PREFIX = "[segwatch]"


def _fmt_num(v: float | None, fmt: str) -> str:
    if v is None:
        return "-"
    if not math.isfinite(v):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")
    return format(v, fmt)


def _last_miou(state: Any) -> float | None:
    miou = getattr(state, "miou", None) or []
    if miou:
        last = miou[-1]
        try:
            return float(last[1]) if isinstance(last, (tuple, list)) else float(last)
        except (TypeError, ValueError, IndexError):
            return None
    return None


def status_line(state: Any, status: str | None = None) -> str:
    """One line: step, loss, gradient norm, predicted classes, mIoU, speed."""
    step = getattr(state, "step", 0) or 0
    parts = [f"step {step}"]
    if not step and last_value(getattr(state, "loss", None)) is None:
        parts = ["waiting for the first training step"]
    loss = last_value(getattr(state, "loss", None))
    if loss is not None:
        parts.append(f"loss {_fmt_num(loss, '.4g')}")
    grad = last_value(getattr(state, "grad_norm", None))
    if grad is not None:
        parts.append(f"grad {_fmt_num(grad, '.1e')}")
    uniq = last_value(getattr(state, "pred_unique", None))
    if uniq is not None and finite(uniq):
        n = getattr(state, "num_classes", None)
        parts.append(f"pred classes {int(uniq)}/{n if n else '?'}")
    miou = _last_miou(state)
    if miou is not None:
        parts.append(f"mIoU {_fmt_num(miou, '.1f')}%")
    else:
        sm = getattr(state, "script_metrics", None) or []
        if sm:
            try:
                parts.append(f"script mIoU {float(sm[-1][1]):.1f}%")
            except (TypeError, ValueError, IndexError):
                pass
    sps = getattr(state, "steps_per_sec", None)
    try:
        if sps is not None and math.isfinite(float(sps)) and float(sps) > 0:
            parts.append(f"{float(sps):.1f} it/s")
    except (TypeError, ValueError):
        pass
    nf = len(getattr(state, "findings", None) or {})
    if nf:
        parts.append(f"{nf} finding{'s' if nf != 1 else ''}")
    head = PREFIX
    if status and status not in ("running",):
        head += f" {status.upper()}"
    return f"{head} " + " | ".join(parts)


def _evidence_text(evidence: Any, limit: int = 6) -> str:
    if not isinstance(evidence, dict):
        return ""
    items = []
    for k, v in evidence.items():
        if isinstance(v, float):
            v = f"{v:.4g}"
        elif isinstance(v, (list, tuple, dict)):
            s = str(v)
            if len(s) > 40:
                continue
            v = s
        items.append(f"{k}={v}")
        if len(items) >= limit:
            break
    return ", ".join(items)


def finding_line(finding: Any, lang: str = "en") -> str:
    """``[segwatch] ERROR pred.collapse at step 57: <title> (<evidence>) — <advice>``."""
    fid = getattr(finding, "id", None) or (finding.get("id") if isinstance(finding, dict) else "?")
    if isinstance(finding, dict):
        sev = finding.get("severity", "info")
        step = finding.get("first_step")
        phase = finding.get("phase")
        evidence = finding.get("evidence")
        title = finding.get("title") or ""
        advice = finding.get("advice") or ""
    else:
        sev = getattr(finding, "severity", "info")
        step = getattr(finding, "first_step", None)
        phase = getattr(finding, "phase", None)
        evidence = getattr(finding, "evidence", None)
        try:
            title = finding.title(lang)
        except Exception:
            title = ""
        try:
            advice = finding.advice(lang)
        except Exception:
            advice = ""
    where = f" at step {step}" if step is not None else ""
    if phase == "val":
        where += " (val)"
    text = f"{PREFIX} {str(sev).upper()} {fid}{where}"
    body = title or ""
    ev = _evidence_text(evidence)
    if ev:
        body = f"{body} ({ev})" if body else ev
    if body:
        text += f": {body}"
    if advice:
        text += f" — {advice}"
    return text
