"""Plain-text views of a run for terminals without the app (``--headless``, logs, CI).

    [segwatch] step 640 | loss 1.234 | grad 3.2e+00 @ step 608 | pred classes 7/37 | mIoU 12.3% | 10.2 it/s
    [segwatch] ERROR pred.collapse @ step 57 — Predictions collapsed to one class
        evidence: source=training predictions  class=1  class_name=floor  share=1
        advice: The network outputs the same class everywhere. Lower the learning rate ...

Every value comes from its RunState reading; one older than twice its probe's interval
carries the step it was measured at ("@ step 608"), never passing for current.
``StatusLines`` prints a status line only when something was measured anew (or every
``heartbeat``-th call), not the same values again and again.
"""
from __future__ import annotations

import io
import math
import os
from typing import Any

from segwatch.core.wording import evidence_label, evidence_value

from segwatch.runs.corelink import finite, last_value

PREFIX = "[segwatch]"
#: A finding's evidence and advice lines: indented under its head line, wrapped at WIDTH.
INDENT = "    "
WIDTH = 100

#: The fixed words of segwatch's own lines, by language (finding titles and advice come
#: from core, in the same language). Ids (``pred.collapse``) and numbers stay as they are.
WORDS: dict[str, dict[str, str]] = {
    "en": {
        "step": "step {n}", "waiting": "waiting for the first training step", "loss": "loss {v}",
        "grad": "grad {v}", "pred_classes": "pred classes {k}/{n}", "miou": "mIoU {v}%",
        "script_miou": "script mIoU {v}%", "speed": "{v} it/s", "findings_1": "{n} finding",
        "findings_n": "{n} findings", "at_step": " at step {n}", "val": " (val)",
        "evidence": "evidence:", "advice": "advice:",
        "error": "ERROR", "warning": "WARNING", "info": "INFO",
        "starting": "STARTING", "running": "RUNNING", "paused": "PAUSED", "finished": "FINISHED",
        "killed": "KILLED", "failed": "FAILED", "lost": "LOST",
        "by_policy": "policy", "by_user": "user", "by_signal": "signal", "by_supervisor": "supervisor",
        "paused_by": "PAUSED by {by}{why}. The training is stopped (SIGSTOP), not ended. "
                     "Resume: segwatch ctl {run} resume   Stop: segwatch ctl {run} kill",
        "why": " ({finding} at step {n})", "resumed_by": "resumed by {by}",
        "killing": "KILLING the training, by {by}{why}", "resume_hint": " | resume: segwatch ctl {run} resume",
        "stopping": "{sig}: stopping the training", "stopping_force": "{sig}: stopping the training "
                                                                    "(press Ctrl-C again to force)",
        "suspended": "suspended with the training (fg to continue)",
        "final": "{status}: exit {code} | run dir {run} | report {report}",
        "run_dir": "run dir {run}", "replayed": "replayed {n} events from {run}",
        "invalid_skipped": " ({n} invalid lines skipped)",
        "rank_loss": "loss by rank {v}", "measured_at": " @ step {n}",
        "paused_coop": "PAUSED by {by}{why}. Every rank waits at its next step boundary (cooperative "
                       "pause), not ended. Resume: segwatch ctl {run} resume   Stop: segwatch ctl {run} kill",
        "demo_shown": "demo done: {finding} was found at step {step} and the policy {action} the run, "
                      "as the demo means to show; the training's own exit status: {code}; segwatch demo exits 0",
        "demo_kill": "stopped", "demo_pause": "paused",
        "demo_plain": "demo ended; the training's own exit status: {code}",
    },
    "zh": {
        "step": "第 {n} 步", "waiting": "等待第一个训练步", "loss": "损失 {v}", "grad": "梯度范数 {v}",
        "pred_classes": "预测类别 {k}/{n}", "miou": "mIoU {v}%", "script_miou": "脚本 mIoU {v}%",
        "speed": "{v} 步/秒", "findings_1": "{n} 条诊断", "findings_n": "{n} 条诊断",
        "at_step": "（第 {n} 步）", "val": "（验证）", "evidence": "证据：", "advice": "建议：",
        "error": "错误", "warning": "警告", "info": "提示",
        "starting": "启动中", "running": "运行中", "paused": "已暂停", "finished": "已完成",
        "killed": "已终止", "failed": "失败", "lost": "失联",
        "by_policy": "策略", "by_user": "用户", "by_signal": "信号", "by_supervisor": "segwatch",
        "paused_by": "已由{by}暂停{why}。训练被挂起（SIGSTOP），并未结束。"
                     "继续：segwatch ctl {run} resume   终止：segwatch ctl {run} kill",
        "why": "（{finding}，第 {n} 步）", "resumed_by": "已由{by}恢复",
        "killing": "正在终止训练，由{by}发起{why}", "resume_hint": " | 继续：segwatch ctl {run} resume",
        "stopping": "{sig}：正在停止训练", "stopping_force": "{sig}：正在停止训练（再按一次 Ctrl-C 强制结束）",
        "suspended": "已与训练一起挂起（fg 继续）",
        "final": "{status}：退出码 {code} | 运行目录 {run} | 报告 {report}",
        "run_dir": "运行目录 {run}", "replayed": "已从 {run} 重放 {n} 个事件",
        "invalid_skipped": "（跳过 {n} 行无效内容）",
        "rank_loss": "各进程损失 {v}", "measured_at": "（第 {n} 步的值）",
        "paused_coop": "已由{by}暂停{why}。每个进程在下一个训练步边界等待（协作式暂停），并未结束。"
                       "继续：segwatch ctl {run} resume   终止：segwatch ctl {run} kill",
        "demo_shown": "演示完成：第 {step} 步发现 {finding}，策略{action}了训练，这正是演示要展示的；"
                      "训练本身的退出码：{code}；segwatch demo 退出码为 0",
        "demo_kill": "终止", "demo_pause": "暂停",
        "demo_plain": "演示结束；训练本身的退出码：{code}",
    },
}


def tr(key: str, lang: str = "en", **fields: Any) -> str:
    """A fixed phrase in ``lang`` (English when the language or the phrase is unknown)."""
    text = WORDS.get(lang, WORDS["en"]).get(key) or WORDS["en"].get(key, key)
    return text.format(**fields) if fields else text


def status_word(status: str | None, lang: str = "en") -> str:
    if not status:
        return ""
    return tr(status, lang) if status in WORDS["en"] else str(status).upper()


def by_word(by: str | None, lang: str = "en") -> str:
    return tr(f"by_{by}", lang) if f"by_{by}" in WORDS["en"] else str(by)


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


def _reading(state: Any, name: str) -> Any:
    """RunState's reading ``name`` (value, step, probe), or None (an older state has none)."""
    readings = getattr(state, "readings", None)
    return readings.get(name) if isinstance(readings, dict) else None


def _age_suffix(state: Any, reading: Any, lang: str) -> str:
    """`` @ step N`` when ``reading`` is old (older than twice its probe's interval)."""
    try:
        old = reading is not None and state.is_old(reading)
    except Exception:
        old = False
    return tr("measured_at", lang, n=reading.step) if old else ""


def status_line(state: Any, status: str | None = None, lang: str = "en") -> str:
    """One line: step, loss, gradient norm, predicted classes, mIoU, speed (fixed words in
    ``lang``); an old value says the step it was measured at."""
    step = getattr(state, "step", 0) or 0
    parts = [tr("step", lang, n=step)]
    if not step and last_value(getattr(state, "loss", None)) is None:
        parts = [tr("waiting", lang)]
    r = _reading(state, "loss")
    loss = r.value if r is not None else last_value(getattr(state, "loss", None))
    if loss is not None:
        parts.append(tr("loss", lang, v=_fmt_num(loss, ".4g")) + _age_suffix(state, r, lang))
    r = _reading(state, "grad_norm")
    grad = r.value if r is not None else last_value(getattr(state, "grad_norm", None))
    if grad is not None:
        parts.append(tr("grad", lang, v=_fmt_num(grad, ".1e")) + _age_suffix(state, r, lang))
    per_rank = _rank_losses(state)
    if per_rank:
        parts.append(tr("rank_loss", lang, v=per_rank))
    r = _reading(state, "preds")
    if r is not None:
        uniq = r.value.get("unique")
    else:
        uniq = last_value(getattr(state, "pred_unique", None))
    if uniq is not None and finite(uniq):
        n = getattr(state, "num_classes", None)
        parts.append(tr("pred_classes", lang, k=int(uniq), n=n if n else "?") + _age_suffix(state, r, lang))
    miou = _last_miou(state)
    if miou is not None:
        parts.append(tr("miou", lang, v=_fmt_num(miou, ".1f")) + _age_suffix(state, _reading(state, "miou"), lang))
    else:
        sm = getattr(state, "script_metrics", None) or []
        if sm:
            try:
                parts.append(tr("script_miou", lang, v=f"{float(sm[-1][1]):.1f}"))
            except (TypeError, ValueError, IndexError):
                pass
    sps = getattr(state, "steps_per_sec", None)
    try:
        if sps is not None and math.isfinite(float(sps)) and float(sps) > 0:
            parts.append(tr("speed", lang, v=f"{float(sps):.1f}"))
    except (TypeError, ValueError):
        pass
    nf = len(getattr(state, "findings", None) or {})
    if nf:
        parts.append(tr("findings_1" if nf == 1 else "findings_n", lang, n=nf))
    head = PREFIX
    if status and status not in ("running",):
        head += f" {status_word(status, lang)}"
    return f"{head} " + " | ".join(parts)


class StatusLines:
    """The periodic status line, without repeats: ``next(state, ...)`` returns a line when
    something was measured anew since the last line (a reading's step, a finding, the
    status, an evaluation), or on every ``heartbeat``-th call even if not; else None."""

    WATCHED = ("loss", "grad_norm", "preds", "lr", "miou")

    def __init__(self, heartbeat: int = 10) -> None:
        self.heartbeat = max(1, int(heartbeat))
        self._key: Any = None
        self._skipped = 0

    def change_key(self, state: Any, status: str | None) -> tuple:
        steps = []
        for name in self.WATCHED:
            r = _reading(state, name)
            steps.append(None if r is None else r.step)
        if _reading(state, "loss") is None:  # a state without readings: its loss series
            steps.append(getattr(getattr(state, "loss", None), "total", None))
        rank_loss = getattr(state, "rank_loss", None)
        ranks = tuple((k, getattr(v, "total", 0)) for k, v in sorted(rank_loss.items())) \
            if isinstance(rank_loss, dict) else ()
        return (status, tuple(steps), ranks, len(getattr(state, "findings", None) or {}),
                len(getattr(state, "script_metrics", None) or []))

    def next(self, state: Any, status: str | None = None, lang: str = "en") -> str | None:
        key = self.change_key(state, status)
        if key == self._key and self._skipped + 1 < self.heartbeat:
            self._skipped += 1
            return None
        self._key = key
        self._skipped = 0
        return status_line(state, status, lang)


def same_terminal(a: Any, b: Any) -> bool:
    """Whether two binary streams write to the same file or terminal (then a line the child
    left open on one would get segwatch's line on the other glued to it)."""
    if a is None or b is None:
        return False
    if a is b:
        return True
    try:
        sa, sb = os.fstat(a.fileno()), os.fstat(b.fileno())
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        return False
    return (sa.st_dev, sa.st_ino, sa.st_rdev) == (sb.st_dev, sb.st_ino, sb.st_rdev)


def _rank_losses(state: Any, limit: int = 8) -> str:
    """``0:1.23 1:1.31`` (the last loss of each rank) for a distributed run, else ""."""
    series = getattr(state, "rank_loss", None)
    if not isinstance(series, dict) or len(series) < 2:
        return ""
    items = []
    for r in sorted(series)[:limit]:
        v = last_value(series[r])
        items.append(f"{r}:{_fmt_num(v, '.4g') if v is not None else '-'}")
    if len(series) > limit:
        items.append("…")
    return " ".join(items)


def _evidence_value(v: Any, lang: str = "en") -> str | None:
    v = evidence_value(v, lang)
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (list, tuple, dict)):
        text = str(v)
        return text if len(text) <= 60 else text[:57] + "..."
    return str(v)


def evidence_lines(evidence: Any, lang: str = "en", limit: int = 8, width: int = WIDTH) -> list[str]:
    """A finding's evidence as indented ``key=value`` lines, wrapped at ``width``
    (the keys in ``lang`` where core names them; the values as measured)."""
    if not isinstance(evidence, dict) or not evidence:
        return []
    items = []
    for k, v in list(evidence.items())[:limit]:
        text = _evidence_value(v, lang)
        if text is not None:
            items.append(f"{evidence_key(k, lang)}={text}")
    if len(evidence) > limit:
        items.append("…")
    head = INDENT + tr("evidence", lang)
    return _wrap(items, head, width, sep="  ")


def _wrap(words: list[str], head: str, width: int, sep: str = " ") -> list[str]:
    """``words`` after ``head``, in lines of at most ``width`` characters (a word longer
    than that has a line of its own); continuation lines are indented under the first."""
    lines: list[str] = []
    cur = head
    pad = " " * len(INDENT + "  ")
    first = True
    for w in words:
        joiner = ("" if cur.endswith("：") else " ") if first else sep
        if not first and len(cur) + len(joiner) + len(w) > width:
            lines.append(cur)
            cur, joiner = pad, ""
        cur += joiner + w
        first = False
    lines.append(cur)
    return lines


def advice_lines(advice: str, lang: str = "en", width: int = WIDTH) -> list[str]:
    """The advice as indented lines of at most ``width`` characters (Chinese text, which has
    no spaces, is cut at its sentence ends)."""
    if not advice:
        return []
    head = INDENT + tr("advice", lang)
    if lang == "zh":
        parts = [p + "。" for p in advice.split("。") if p.strip()]
        if not advice.rstrip().endswith("。") and parts:
            parts[-1] = parts[-1][:-1]
        return _wrap(parts, head, width // 2, sep="")
    return _wrap(advice.split(), head, width)


def evidence_key(key: str, lang: str = "en") -> str:
    """An evidence key as the user reads it in ``lang`` (the key itself when unnamed)."""
    try:
        return evidence_label(key, lang) or key
    except Exception:
        return key


def finding_line(finding: Any, lang: str = "en") -> str:
    """``[segwatch] ERROR pred.collapse @ step 57 — <title>``, then indented evidence and
    advice lines (``[segwatch] 错误 pred.collapse @ 第 57 步 — <标题>`` in Chinese)."""
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
    where = " @ " + tr("step", lang, n=step) if step is not None else ""
    if phase == "val":
        where += tr("val", lang)
    sev_word = tr(str(sev), lang) if str(sev) in ("error", "warning", "info") else str(sev).upper()
    head = f"{PREFIX} {sev_word} {fid}{where}"
    if title:
        head += f" — {title}"
    return "\n".join([head] + evidence_lines(evidence, lang) + advice_lines(advice, lang))


_STATE_ZH = {"ok": "正常", "warn": "注意", "fail": "失败", "pending": "待定"}


def report_text_zh(rep: dict) -> str:
    """``segwatch report RUN --lang zh``: the report's facts, findings (head line, evidence and
    advice as in headless output) and checklist, in Chinese."""
    miou = rep.get("miou") or []
    last = None
    try:
        last = float(miou[-1][1] if isinstance(miou[-1], (list, tuple)) else miou[-1]) if miou else None
    except (TypeError, ValueError, IndexError):
        last = None
    action = rep.get("action") or {}
    act = "无"
    if action:
        kind = {"pause": "暂停", "kill": "终止", "resume": "恢复"}.get(str(action.get("kind")), action.get("kind"))
        act = (f"{kind}（{action.get('finding') or '-'}，第 {action.get('step')} 步，"
               f"由{by_word(action.get('by') or 'policy', 'zh')}发起）")
    lines = [f"segwatch 报告 — {rep.get('run_dir') or ''}",
             f"  脚本：    {rep.get('script')}",
             f"  状态：    {status_word(rep.get('status'), 'zh')}   退出码：{rep.get('exit_code')}",
             f"  步数：    {rep.get('steps')}   mIoU："
             + (f"{last:.2f}%（共 {len(miou)} 次评估，最后一次）" if last is not None else "-"),
             f"  动作：    {act}", ""]
    findings = rep.get("findings") or []
    lines.append(f"诊断（{len(findings)} 条）：" if findings else "诊断：无")
    for f in findings:
        lines.extend("  " + line for line in finding_line(f, "zh").replace(PREFIX + " ", "").splitlines())
    checklist = rep.get("checklist") or []
    if checklist:
        lines += ["", "检查清单："]
        for item in checklist:
            state = _STATE_ZH.get(str(item.get("state")), str(item.get("state")))
            lines.append(f"  [{state}] {item.get('title') or item.get('id')}：{item.get('evidence') or ''}")
    return "\n".join(lines)
