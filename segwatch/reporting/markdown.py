"""The run report a person reads: ``report.md`` plus SVG charts, rebuilt from the run dir.

``render_markdown(run_dir, out_dir=None, lang="en")`` replays the stored events
(``RunStore.events()``: ``events.jsonl`` then ``events.shim.jsonl``) into a fresh
``RunState`` and writes ``OUT_DIR/report.md`` (default ``RUN_DIR/report/``) with:

- run facts (script, argv, status, exit code, steps, epochs, duration, device, torch,
  overhead share, events / dropped),
- the policy action, the mIoU the script printed next to segwatch's (both conventions),
- findings (severity, id, title, first step, phase, evidence table, advice),
- the guide's 9-item checklist,
- loss / gradient-norm (log) / mIoU curves (``loss.svg``, ``grad_norm.svg``, ``miou.svg``),
- the last evaluation's confusion matrix as a row-normalised heatmap (``confusion.svg``,
  the top classes only when there are many) and a per-class IoU table,
- the pretrained weights that ``load_state_dict`` saw.

``lang="zh"``: headings and fixed texts in Chinese; findings and checklist come
translated from core. Layer: stdlib + numpy + core + config (+ the run store reader).
"""
from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from segwatch.core import metrics as M
from segwatch.core.findings import SEVERITY_RANK
from segwatch.core.wording import evidence_label, evidence_value
from segwatch.protocol import LineDecoder, as_float

from . import charts

#: history kept per curve when replaying for a report (the live app keeps 4096)
HISTORY = 200_000
#: most points drawn per curve (non-finite points are always kept)
MAX_POINTS = 2000
#: confusion heatmap: draw at most this many classes
TOP_K = 20
#: output lines kept in memory for the bundle's log cut (the lines of the first steps)
OUTPUT_KEEP_STEPS = 1000
OUTPUT_KEEP_LINES = 200_000

_T: dict[str, dict[str, str]] = {
    "title": {"en": "segwatch report", "zh": "segwatch 运行报告"},
    "run": {"en": "Run", "zh": "运行概况"},
    "action": {"en": "Policy action", "zh": "策略动作"},
    "miou": {"en": "mIoU: printed by the script vs measured by segwatch", "zh": "mIoU：脚本打印值 vs segwatch 测量值"},
    "findings": {"en": "Findings", "zh": "诊断发现"},
    "checklist": {"en": "Checklist", "zh": "检查清单"},
    "curves": {"en": "Curves", "zh": "训练曲线"},
    "confusion": {"en": "Confusion matrix (last evaluation)", "zh": "混淆矩阵（最后一次评估）"},
    "per_class": {"en": "Per-class IoU (last evaluation)", "zh": "各类别 IoU（最后一次评估）"},
    "weights": {"en": "Pretrained weights", "zh": "预训练权重"},
    "none": {"en": "None.", "zh": "无。"},
    "no_findings": {"en": "No findings.", "zh": "没有诊断发现。"},
    "no_eval": {"en": "No evaluation with a confusion matrix was observed.",
                "zh": "没有观测到带混淆矩阵的评估。"},
    "no_action": {"en": "No pause or kill.", "zh": "没有暂停或终止。"},
    "field": {"en": "field", "zh": "项目"},
    "value": {"en": "value", "zh": "值"},
    "script": {"en": "script", "zh": "脚本"},
    "argv": {"en": "arguments", "zh": "参数"},
    "status": {"en": "status", "zh": "状态"},
    "exit_code": {"en": "exit code", "zh": "退出码"},
    "steps": {"en": "training steps (backward calls)", "zh": "训练步数（backward 次数）"},
    "epochs": {"en": "epoch (as the script prints it)", "zh": "epoch（按脚本自己的输出）"},
    "epoch_of": {"en": "{n} of {total}", "zh": "{n} / {total}"},
    "epoch_unknown": {"en": "unknown: the script prints no epoch; {p} passes over the training loader",
                      "zh": "无法得知：脚本没有打印 epoch；训练数据加载器已遍历 {p} 次"},
    "duration": {"en": "duration", "zh": "时长"},
    "device": {"en": "device", "zh": "设备"},
    "torch": {"en": "torch version", "zh": "torch 版本"},
    "python": {"en": "python", "zh": "python"},
    "model": {"en": "model", "zh": "模型"},
    "classes": {"en": "classes / ignore index", "zh": "类别数 / ignore index"},
    "config": {"en": "config", "zh": "配置文件"},
    "overhead": {"en": "segwatch overhead (share of step time)", "zh": "segwatch 开销（占步时比例）"},
    "events": {"en": "events (invalid / dropped)", "zh": "事件数（无效 / 丢弃）"},
    "steady": {"en": "steady", "zh": "稳定期"},
    "shim": {"en": "instrumentation", "zh": "插桩"},
    "shim_off": {"en": "off (--no-shim): output parsing and process control only",
                 "zh": "关闭（--no-shim）：只解析输出并控制进程"},
    "budget": {"en": "budget", "zh": "预算"},
    "run_dir": {"en": "run directory", "zh": "运行目录"},
    "severity": {"en": "severity", "zh": "严重程度"},
    "first_step": {"en": "first step", "zh": "首次出现步数"},
    "phase": {"en": "phase", "zh": "阶段"},
    "seen": {"en": "seen", "zh": "出现次数"},
    "last_step": {"en": "last step", "zh": "最后步数"},
    "evidence": {"en": "evidence", "zh": "证据"},
    "advice": {"en": "advice", "zh": "建议"},
    "item": {"en": "item", "zh": "检查项"},
    "state": {"en": "state", "zh": "状态"},
    "eval": {"en": "evaluation", "zh": "评估"},
    "step": {"en": "step", "zh": "步数"},
    "guide": {"en": "segwatch (guide: NaN→0, mean over all C)", "zh": "segwatch（指南口径：NaN→0，对全部 C 类平均）"},
    "mmseg": {"en": "segwatch (mmseg: nanmean)", "zh": "segwatch（mmseg 口径：nanmean）"},
    "printed": {"en": "script printed", "zh": "脚本打印"},
    "pixel_acc": {"en": "pixel acc.", "zh": "像素准确率"},
    "pred_classes": {"en": "classes predicted", "zh": "预测出的类别数"},
    "aborted": {"en": "aborted", "zh": "中断"},
    "yes": {"en": "yes", "zh": "是"},
    "no": {"en": "no", "zh": "否"},
    "loss": {"en": "Training loss", "zh": "训练 Loss"},
    "grad_norm": {"en": "Total gradient norm", "zh": "总梯度范数"},
    "miou_curve": {"en": "mIoU (%)", "zh": "mIoU（%）"},
    "nonfinite": {"en": "non-finite", "zh": "非有限值"},
    "no_data": {"en": "no data", "zh": "无数据"},
    "predicted": {"en": "predicted class", "zh": "预测类别"},
    "ground_truth": {"en": "ground-truth class", "zh": "真实类别"},
    "other": {"en": "(other)", "zh": "（其他）"},
    "class": {"en": "class", "zh": "类别"},
    "gt_px": {"en": "GT px", "zh": "GT 像素"},
    "pred_px": {"en": "Pred px", "zh": "预测像素"},
    "correct_px": {"en": "Correct px", "zh": "正确像素"},
    "iou": {"en": "IoU %", "zh": "IoU %"},
    "module": {"en": "module", "zh": "模块"},
    "keys": {"en": "keys (loaded / total)", "zh": "键（已加载 / 总数）"},
    "missing": {"en": "missing", "zh": "缺失"},
    "unexpected": {"en": "unexpected", "zh": "多余"},
    "strict": {"en": "strict", "zh": "strict"},
    "examples_missing": {"en": "first missing keys", "zh": "缺失键示例"},
    "examples_unexpected": {"en": "first unexpected keys", "zh": "多余键示例"},
    "no_weights": {"en": "No `load_state_dict` call was observed.", "zh": "没有观测到 `load_state_dict` 调用。"},
    "partial": {"en": "The run has not ended: this report is partial.", "zh": "运行尚未结束：本报告不完整。"},
    "by": {"en": "by", "zh": "触发者"},
    "kind": {"en": "action", "zh": "动作"},
    "finding": {"en": "finding", "zh": "诊断"},
    "decisive": {"en": "Decisive action", "zh": "决定性动作"},
    "no_curve": {"en": "(no samples)", "zh": "（无采样）"},
    "state_ok": {"en": "ok", "zh": "通过"},
    "state_warn": {"en": "warn", "zh": "警告"},
    "state_fail": {"en": "fail", "zh": "失败"},
    "state_pending": {"en": "pending", "zh": "待定"},
    "sev_error": {"en": "ERROR", "zh": "错误"},
    "sev_warning": {"en": "WARNING", "zh": "警告"},
    "sev_info": {"en": "INFO", "zh": "提示"},
}


def epoch_text(st, bye: dict | None, lang: str) -> str:
    """The script's epoch as it prints it, or a sentence saying it cannot be known (with the
    passes over the training loader, counting next()-driven passes the shim could not)."""
    loop = getattr(st, "loop", None)
    n = getattr(loop, "script_epoch", None)
    if n is not None:
        total = getattr(loop, "script_epochs_total", None)
        return tr("epoch_of", lang).format(n=n, total=total) if total else str(n)
    passes = getattr(loop, "passes", 0) or 0
    if bye and isinstance(bye.get("epoch"), int):
        passes = max(passes, bye["epoch"])
    return tr("epoch_unknown", lang).format(p=passes)


def _evidence_key(key: str, lang: str) -> str:
    """``key`` (as in the JSON report), with its Chinese label in zh: 来源 (`source`)."""
    label = evidence_label(key, lang)
    return f"`{key}`" if label == key else f"{label} (`{key}`)"


def tr(key: str, lang: str) -> str:
    t = _T.get(key)
    if t is None:
        return key
    return t.get(lang) or t["en"]


# ---------------------------------------------------------------------- replay
class RunData:
    """A run directory read back for reporting.

    ``state`` (a RunState fed every stored event), ``meta`` (meta.json), ``report``
    (the ``segwatch.report/1`` dict, as ``segwatch report --json`` builds it), and what a
    report needs beyond RunState: ``hello``, ``overhead`` (last overhead event, all its
    fields), ``bye``, ``state_dict_events``, ``outputs`` [(stream, line, step seen so far)],
    ``events`` / ``invalid`` counts, ``config_path`` and where the config came from.
    """

    def __init__(self, run_dir: str | os.PathLike, lang: str | None = "en") -> None:
        from segwatch.core.state import RunState
        from segwatch.runs import RunDir, effective_status

        self.store = RunDir(run_dir)
        self.run_dir = self.store.path
        self.meta = self.store.read_meta()
        if lang is None:   # the run's own language (segwatch run --lang)
            lang = self.meta.get("lang") if self.meta.get("lang") in ("en", "zh") else "en"
        self.lang = lang
        self.config, self.config_source = self._config()
        self.config_path = self.meta.get("config") if isinstance(self.meta.get("config"), str) else None
        self.state = RunState(self.config, lang=lang, history=HISTORY)
        self.hello: dict | None = None
        self.overhead: dict | None = None
        self.bye: dict | None = None
        self.state_dict_events: list[dict] = []
        self.outputs: list[tuple[str, str, int]] = []   # the first ones (see OUTPUT_KEEP_*)
        self.output_totals: dict[str, int] = {}          # output events per stream, all
        self.actions: list[dict] = []
        self.events = 0
        counter = LineDecoder()
        for ev in self.store.events(counter):
            self.events += 1
            typ = ev.get("type")
            rank = ev.get("rank") or 0
            if typ == "hello" and rank == 0 and self.hello is None:
                self.hello = ev
            elif typ == "overhead" and rank == 0:
                self.overhead = ev
            elif typ == "bye" and rank == 0:
                self.bye = ev
            elif typ == "state_dict" and rank == 0:
                self.state_dict_events.append(ev)
            elif typ == "action":
                self.actions.append(ev)
            self.state.ingest(ev)
            if typ == "output":
                stream = str(ev.get("stream"))
                self.output_totals[stream] = self.output_totals.get(stream, 0) + 1
                if self.state.step <= OUTPUT_KEEP_STEPS and len(self.outputs) < OUTPUT_KEEP_LINES:
                    self.outputs.append((stream, str(ev.get("line")), int(self.state.step)))
        self.invalid = counter.invalid
        self.status = effective_status(self.meta) if self.meta else self.state.status
        if self.config_source is None and self.state.config is not None and self.hello and self.hello.get("config"):
            self.config_source = "hello"
        self.report = self._report()

    def _config(self):
        from segwatch.config import Config, load_config

        d = self.meta.get("config_resolved")
        if isinstance(d, dict) and d:
            try:
                return Config.from_dict(d, source="<meta.json>"), "meta.json"
            except Exception:
                pass
        path = self.meta.get("config")
        if isinstance(path, str) and path:
            p = Path(path)
            if not p.is_absolute() and isinstance(self.meta.get("cwd"), str):
                p = Path(self.meta["cwd"]) / p
            try:
                return load_config(p), str(p)
            except Exception:
                pass
        return None, None   # RunState then takes the hello event's config

    def _report(self) -> dict:
        exit_code = self.meta.get("exit_code", self.state.exit_code)
        if exit_code is None:
            exit_code = self.state.exit_code
        rep = self.state.report(exit_code)
        try:
            from segwatch.runs import finalize_report
        except Exception:  # pragma: no cover - runs layer unavailable
            rep["run_dir"] = str(self.run_dir)
        else:
            finalize_report(rep, exit_code=exit_code, status=self.status,
                            script=self.meta.get("script"), run_dir=str(self.run_dir),
                            actions=self.actions)
        if self.status not in ("finished", "killed", "failed", "lost"):
            rep["note"] = "the run has not ended: this report is partial"
        return rep

    # convenience -----------------------------------------------------------
    @property
    def script(self) -> str | None:
        return self.meta.get("script") or self.state.script

    @property
    def script_argv(self) -> list[str]:
        """The script's own arguments (without the script path)."""
        argv = self.meta.get("argv")
        if isinstance(argv, list):
            return [str(a) for a in argv]
        argv = (self.hello or {}).get("argv")
        if isinstance(argv, list):
            return [str(a) for a in argv[1:]]
        return []

    @property
    def cwd(self) -> str | None:
        c = self.meta.get("cwd") or (self.hello or {}).get("cwd")
        return c if isinstance(c, str) else None


def load_run(run_dir: str | os.PathLike, lang: str | None = "en") -> RunData:
    return RunData(run_dir, lang)


# ---------------------------------------------------------------------- formatting
def _cell(v: Any) -> str:
    """A Markdown table cell: escaped pipes, no newlines."""
    if v is None:
        s = "–"
    elif isinstance(v, float):
        s = _num(v)
    elif isinstance(v, (dict, list)):
        s = json.dumps(v, ensure_ascii=False)
        if len(s) > 200:
            s = s[:199] + "…"
        s = f"`{s}`"
    else:
        s = str(v)
    return s.replace("|", "\\|").replace("\n", " ").replace("\r", " ")


def _num(v: Any, digits: int = 4) -> str:
    if v is None:
        return "–"
    if isinstance(v, str):
        return v
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    if math.isnan(f):
        return "NaN"
    if math.isinf(f):
        return "Inf" if f > 0 else "-Inf"
    if f == int(f) and abs(f) < 1e15:
        return str(int(f))
    return f"{f:.{digits}g}"


def _pct(v: Any) -> str:
    f = as_float(v) if v is not None else None
    if f is None:
        return "–"
    if math.isnan(f):
        return "NaN"
    return f"{f:.2f} %"


def _duration(s: float | None) -> str:
    if s is None or not math.isfinite(s) or s < 0:
        return "–"
    s = float(s)
    if s < 60:
        return f"{s:.1f} s"
    m, sec = divmod(int(round(s)), 60)
    h, m = divmod(m, 60)
    return f"{h}h {m:02d}m {sec:02d}s" if h else f"{m}m {sec:02d}s"


def _when(t: Any) -> str:
    f = as_float(t) if t is not None else None
    if f is None or not math.isfinite(f):
        return "–"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(f))


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(_cell(h) for h in header) + " |",
           "|" + "|".join("---" for _ in header) + "|"]
    for r in rows:
        out.append("| " + " | ".join(_cell(c) for c in r) + " |")
    return out


def _thin(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """At most MAX_POINTS points, evenly strided; non-finite points always kept."""
    n = len(x)
    if n <= MAX_POINTS:
        return x, y
    keep = np.zeros(n, dtype=bool)
    keep[:: max(1, n // MAX_POINTS)] = True
    keep[-1] = True
    keep |= ~np.isfinite(y)
    return x[keep], y[keep]


# ---------------------------------------------------------------------- sections
def _facts(rd: RunData, lang: str) -> list[str]:
    st, meta, hello = rd.state, rd.meta, rd.hello or {}
    started = meta.get("started") if meta.get("started") is not None else st.started
    ended = meta.get("ended") if meta.get("ended") is not None else st.ended
    dur = None
    try:
        if started is not None and ended is not None:
            dur = float(ended) - float(started)
    except (TypeError, ValueError):
        dur = None
    ov = rd.overhead or {}
    share = ov.get("share_total", ov.get("share"))
    if share is None and rd.bye:
        share = rd.bye.get("share")
    budget = ov.get("budget")
    ov_txt = "–"
    if share is not None:
        f = as_float(share)
        ov_txt = f"{f * 100:.2f} %" if f is not None and math.isfinite(f) else str(share)
        if ov.get("share_steady") is not None:
            ov_txt += f" ({tr('steady', lang)} {as_float(ov['share_steady']) * 100:.2f} %)"
        if budget is not None:
            ov_txt += f", {tr('budget', lang)} {as_float(budget) * 100:.2f} %"
    epoch = epoch_text(st, rd.bye, lang)
    steps = f"{st.step}"
    if rd.bye and rd.bye.get("optimizer_steps_total") is not None:
        steps += f" (optimizer steps {rd.bye.get('optimizer_steps_total')})"
    model = st.model or {}
    model_txt = "–"
    zh = lang == "zh"
    if model:
        model_txt = f"{model.get('cls')}"
        if model.get("params") is not None:
            p, t = int(model["params"]), int(model.get("trainable") or 0)
            model_txt += f"，{p:,} 个参数（{t:,} 个可训练）" if zh else f", {p:,} params ({t:,} trainable)"
        if model.get("site"):
            model_txt += (f"，logits 来自 `{model.get('site')}`（{model.get('out_channels')} 通道）" if zh
                          else f", logits at `{model.get('site')}` ({model.get('out_channels')} ch)")
    ig = st.ignore_index
    ig_txt = f"{st.num_classes if st.num_classes else '–'} / {ig if ig is not None else '–'}"
    if st.inferred_ignore is not None:
        ig_txt += f"（推断为 {st.inferred_ignore}）" if zh else f" (inferred {st.inferred_ignore})"
    status = rd.status
    if st.signal:
        status += f" (signal {st.signal})"
    rows = [
        [tr("script", lang), f"`{rd.script}`" if rd.script else None],
        [tr("argv", lang), "`" + " ".join(rd.script_argv) + "`" if rd.script_argv else "–"],
        [tr("status", lang), status],
        [tr("exit_code", lang), rd.report.get("exit_code")],
        [tr("steps", lang), steps],
        [tr("epochs", lang), epoch],
        [tr("duration", lang), f"{_duration(dur)} ({_when(started)} → {_when(ended)})"],
        [tr("device", lang), hello.get("device")],
        [tr("torch", lang), hello.get("torch")],
        [tr("python", lang), hello.get("python")],
        [tr("model", lang), model_txt],
        [tr("classes", lang), ig_txt],
        [tr("config", lang), f"`{rd.config_path}`" if rd.config_path else _config_src(rd.config_source, lang)],
        [tr("overhead", lang), ov_txt],
        [tr("events", lang), f"{rd.events} ({rd.invalid} / {st.counters.get('dropped', 0)})"],
        [tr("run_dir", lang), f"`{rd.run_dir}`"],
    ]
    if meta.get("shim") is False:
        rows.insert(3, [tr("shim", lang), tr("shim_off", lang)])
    return _table([tr("field", lang), tr("value", lang)], rows)


def _config_src(src: str | None, lang: str) -> str:
    if src == "hello":
        return "（来自 hello 事件的配置）" if lang == "zh" else "(resolved config from the hello event)"
    if src == "meta.json":
        return "（meta.json 中的已解析配置）" if lang == "zh" else "(resolved config in meta.json)"
    return src or "–"


def _actions(rd: RunData, lang: str) -> list[str]:
    act = rd.report.get("action")
    out: list[str] = []
    if not rd.actions:
        return [tr("no_action", lang)]
    if act:
        why = f" `{act.get('finding')}`" if act.get("finding") else ""
        out.append(f"**{tr('decisive', lang)}:** {act.get('kind')}{why} @ {tr('step', lang)} "
                   f"{act.get('step')} ({tr('by', lang)} {act.get('by') or 'policy'})")
        out.append("")
    rows = [[a.get("kind"), a.get("finding"), a.get("step"), a.get("by"), _when(a.get("t"))] for a in rd.actions]
    out += _table([tr("kind", lang), tr("finding", lang), tr("step", lang), tr("by", lang), "t"], rows)
    return out


def _pair_script_metrics(evals: list[dict], printed: list[tuple[int, float]]) -> list[float | None]:
    """The script's printed mIoU for each evaluation (by order when the counts match, else
    the first printed value at or after the evaluation's step and before the next one)."""
    if not printed:
        return [None] * len(evals)
    if len(printed) == len(evals):
        return [v for _, v in printed]
    out: list[float | None] = []
    for i, e in enumerate(evals):
        s0 = e.get("step") or 0
        s1 = evals[i + 1].get("step") if i + 1 < len(evals) else None
        match = None
        for s, v in printed:
            if s >= s0 and (s1 is None or s < s1 or (s == s1 and s1 == s0)):
                match = v
                break
        out.append(match)
    return out


def _aborted_line(e: dict, lang: str) -> str:
    exc = e.get("exception")
    done = f"{e.get('batches')}/{e.get('expected') if e.get('expected') is not None else '?'}"
    what = ""
    if isinstance(exc, dict):
        what = f"`{exc.get('type')}: {exc.get('message')}` @ `{exc.get('where')}`"
    if lang == "zh":
        return (f"- 评估 {e.get('index')}（第 {e.get('step')} 步）中断，只完成 {done} 个 batch"
                + (f"，异常 {what}" if what else "") + "：该次 segwatch 的 mIoU 只覆盖已完成的 batch，"
                "脚本打印的值可能是旧值。")
    return (f"- evaluation {e.get('index')} (step {e.get('step')}) stopped after {done} batches"
            + (f", raising {what}" if what else "") + ": segwatch's mIoU for it covers those "
            "batches only, and the value the script printed may be stale.")


def _miou_section(rd: RunData, lang: str) -> list[str]:
    st = rd.state
    evals = list(st.evals)
    printed = list(st.script_metrics)
    if not evals and not printed:
        return [tr("no_eval", lang)]
    pairs = _pair_script_metrics(evals, printed)
    rows = []
    for e, p in zip(evals, pairs):
        rows.append([e.get("index"), e.get("step"), _pct(e.get("miou")), _pct(e.get("miou_mmseg")),
                     _pct(p), _pct(e.get("pixel_acc")), e.get("pred_classes"),
                     tr("yes", lang) if e.get("aborted") else tr("no", lang)])
    out: list[str] = []
    if rows:
        out += _table([tr("eval", lang), tr("step", lang), tr("guide", lang), tr("mmseg", lang),
                       tr("printed", lang), tr("pixel_acc", lang), tr("pred_classes", lang),
                       tr("aborted", lang)], rows)
        out.append("")
    elif printed:
        out += _table([tr("step", lang), tr("printed", lang)], [[s, _pct(v)] for s, v in printed[-50:]])
    broken = [e for e in evals if e.get("aborted") or e.get("exception")]
    shown = broken if len(broken) <= 6 else broken[:5] + broken[-1:]
    for e in shown:
        if len(broken) > 6 and e is broken[-1]:
            out.append(f"- … 另有 {len(broken) - 6} 次" if lang == "zh" else f"- … {len(broken) - 6} more")
        out.append(_aborted_line(e, lang))
    if out and out[-1].startswith("- "):
        out.append("")
    last_p = printed[-1][1] if printed else None
    last = evals[-1] if evals else None
    if last is not None and last_p is not None and last.get("miou") is not None:
        g, mm = as_float(last.get("miou")), as_float(last.get("miou_mmseg"))
        if lang == "zh":
            line = f"最后一次：脚本打印 **{_pct(last_p)}**，segwatch 测得 **{_pct(g)}**（指南口径）/ **{_pct(mm)}**（mmseg 口径）"
        else:
            line = (f"Last: the script printed **{_pct(last_p)}**; segwatch measured **{_pct(g)}** (guide) / "
                    f"**{_pct(mm)}** (mmseg)")
        close = [name for name, v in (("guide", g), ("mmseg", mm))
                 if v is not None and math.isfinite(v) and abs(v - last_p) <= 0.05 + 0.005 * abs(v)]
        if close:
            line += (f" —— 与{'、'.join(close)}口径一致。" if lang == "zh"
                     else f" — matches the {' and '.join(close)} convention{'s' if len(close) > 1 else ''}.")
        else:
            line += (" —— 两者不一致：脚本的评估代码可能有问题（见 `metric.script_disagrees`）。" if lang == "zh"
                     else " — they disagree: the script's evaluation is suspect (see `metric.script_disagrees`).")
        out.append(line)
    return out


def _findings(rd: RunData, lang: str) -> list[str]:
    fl = list(rd.state.findings.values())
    if not fl:
        return [tr("no_findings", lang)]
    fl.sort(key=lambda f: (-SEVERITY_RANK.get(f.severity, 0), f.first_step))
    out: list[str] = []
    for f in fl:
        sev = tr(f"sev_{f.severity}", lang)
        out.append(f"### {sev} `{f.id}` — {f.title(lang)}")
        out.append("")
        out.append(f"{tr('first_step', lang)}: **{f.first_step}** · {tr('phase', lang)}: {f.phase} · "
                   f"{tr('last_step', lang)}: {f.last_step} · {tr('seen', lang)}: {f.count}"
                   + (f" · rank {f.rank}" if f.rank is not None else ""))
        out.append("")
        ev = f.evidence or {}
        if ev:
            out += _table([tr("evidence", lang), tr("value", lang)],
                          [[_evidence_key(k, lang), evidence_value(v, lang)] for k, v in ev.items()])
            out.append("")
        adv = f.advice(lang)
        if adv:
            out.append(f"> **{tr('advice', lang)}:** {adv}")
            out.append("")
    return out[:-1] if out and out[-1] == "" else out


_STATE_ICON = {"ok": "✅", "warn": "⚠️", "fail": "❌", "pending": "⏳"}


def _checklist(rd: RunData, lang: str) -> list[str]:
    rows = []
    for i, item in enumerate(rd.state.checklist, 1):
        rows.append([i, f"`{item.id}` {item.title(lang)}",
                     f"{_STATE_ICON.get(item.state, '')} {tr('state_' + item.state, lang)}", item.evidence])
    return _table(["#", tr("item", lang), tr("state", lang), tr("evidence", lang)], rows)


def _curves(rd: RunData, out_dir: Path, lang: str) -> tuple[list[str], list[str]]:
    st = rd.state
    files: list[str] = []
    md: list[str] = []
    nf, nd = tr("nonfinite", lang), tr("no_data", lang)
    x, y = _thin(st.loss.steps(), st.loss.values())
    svg = charts.line_chart([("loss", x, y)], title=tr("loss", lang), xlabel=tr("step", lang), ylabel="loss",
                            nonfinite_label=nf, empty_label=nd)
    _write(out_dir / "loss.svg", svg)
    files.append("loss.svg")
    md.append(f"![{tr('loss', lang)}](loss.svg)")
    x, y = _thin(st.grad_norm.steps(), st.grad_norm.values())
    svg = charts.line_chart([("grad norm", x, y)], title=tr("grad_norm", lang), xlabel=tr("step", lang),
                            ylabel="‖g‖₂", log_y=True, nonfinite_label=nf, empty_label=nd)
    _write(out_dir / "grad_norm.svg", svg)
    files.append("grad_norm.svg")
    md.append(f"![{tr('grad_norm', lang)}](grad_norm.svg)")
    series = []
    if st.miou:
        series.append(("segwatch (guide)", [s for s, _, _ in st.miou], [g for _, g, _ in st.miou]))
        series.append(("segwatch (mmseg)", [s for s, _, _ in st.miou], [m for _, _, m in st.miou]))
    if st.script_metrics:
        series.append((tr("printed", lang), [s for s, _ in st.script_metrics], [v for _, v in st.script_metrics]))
    svg = charts.line_chart(series, title=tr("miou_curve", lang), xlabel=tr("step", lang), ylabel="mIoU %",
                            y_min=0.0, nonfinite_label=nf, empty_label=nd)
    _write(out_dir / "miou.svg", svg)
    files.append("miou.svg")
    md.append(f"![{tr('miou_curve', lang)}](miou.svg)")
    return md, files


def _confusion(rd: RunData, out_dir: Path, lang: str) -> tuple[list[str], list[str], list[str]]:
    """(confusion section, per-class section, files)."""
    st = rd.state
    m = st.confusion
    if m is None or m.size == 0:
        return [tr("no_eval", lang)], [tr("no_eval", lang)], []
    m = np.asarray(m, dtype=np.int64)
    C = m.shape[0]
    names = list(st.class_names or [])
    last = st.latest_eval() or {}
    # the eval that carried the matrix (the last one with a matrix)
    ev_step = next((e.get("step") for e in reversed(st.evals) if e.get("pixels")), last.get("step"))
    cls = charts.top_classes(m, TOP_K)
    title = (f"混淆矩阵（按行归一化），第 {ev_step} 步" if lang == "zh"
             else f"Confusion matrix, row-normalised, step {ev_step}")
    svg = charts.heatmap(m, names or None, title=title, classes=cls, xlabel=tr("predicted", lang),
                         ylabel=tr("ground_truth", lang), other_label=tr("other", lang))
    _write(out_dir / "confusion.svg", svg)
    conf = [f"![{title}](confusion.svg)", ""]
    if last.get("aborted"):
        conf += ["该次评估中断：矩阵只包含中断前的 batch。" if lang == "zh" else
                 "That evaluation was aborted: the matrix holds only the batches before it stopped.", ""]
    total = int(m.sum())
    if len(cls) < C:
        conf.append(f"仅显示 {C} 个类别中像素最多（真实 + 预测）的 {len(cls)} 个；每行按该真实类别的全部像素归一化，"
                    f"“{tr('other', lang)}”列为预测成未显示类别的比例。" if lang == "zh" else
                    f"Only the {len(cls)} of {C} classes with the most pixels (ground truth + predicted) are drawn; "
                    f"each row is normalised over all of that class's ground-truth pixels, and the "
                    f"\"{tr('other', lang)}\" column holds the share predicted as a class not drawn.")
    else:
        conf.append(f"每行按该真实类别的像素归一化（共 {C} 类，{total:,} 个像素）。" if lang == "zh" else
                    f"Each row is normalised over that ground-truth class's pixels ({C} classes, {total:,} pixels).")
    gt, pred, correct = M.class_totals(m)
    iou = M.iou_per_class(m)
    rows = []
    for c in range(C):
        name = names[c] if c < len(names) else ""
        v = iou[c]
        rows.append([c, name, int(gt[c]), int(pred[c]), int(correct[c]),
                     "NaN" if not math.isfinite(v) else f"{v * 100:.2f}"])
    pc: list[str] = []
    pc += _table(["#", tr("class", lang), tr("gt_px", lang), tr("pred_px", lang), tr("correct_px", lang),
                  tr("iou", lang)], rows)
    pc.append("")
    g, mm = M.miou_guide(m), M.miou_mmseg(m)
    present = int(((gt + pred) > 0).sum())
    if lang == "zh":
        pc.append(f"- mIoU（指南口径，NaN→0，对全部 {C} 类取平均）：**{_pct(g)}**")
        pc.append(f"- mIoU（mmseg 口径，对 {present} 个出现的类别 nanmean）：**{_pct(mm)}**")
        pc.append(f"- 像素准确率：{_pct(M.pixel_accuracy(m))}；预测出 {int(np.count_nonzero(pred))} 个类别，"
                  f"真实标签含 {int(np.count_nonzero(gt))} 个类别")
    else:
        pc.append(f"- mIoU (guide: NaN→0, mean over all {C} classes): **{_pct(g)}**")
        pc.append(f"- mIoU (mmseg: nanmean over the {present} classes present): **{_pct(mm)}**")
        pc.append(f"- pixel accuracy {_pct(M.pixel_accuracy(m))}; {int(np.count_nonzero(pred))} classes predicted, "
                  f"{int(np.count_nonzero(gt))} in the ground truth")
    sig = M.collapse_signature(m)
    if sig:
        c = sig["class"]
        cname = f"{c} ({names[c]})" if c < len(names) else str(c)
        if lang == "zh":
            pc.append(f"- **单类塌缩特征**：只预测了类别 {cname}。按指南口径 mIoU = p_c / C = "
                      f"{sig['share'] * 100:.2f}% / {C} = **{sig['expected_miou']:.3f}%**（实测 {sig['observed_miou']:.3f}%）；"
                      f"仅当该类也是唯一出现的类别时才等于 100/C = {100 / C:.3f}%。")
        else:
            pc.append(f"- **Collapse signature**: only class {cname} is predicted. Under the guide's metric "
                      f"mIoU = p_c / C = {sig['share'] * 100:.2f}% / {C} = **{sig['expected_miou']:.3f}%** "
                      f"(observed {sig['observed_miou']:.3f}%); it equals 100/C = {100 / C:.3f}% only when that "
                      f"class is the only one present.")
    return conf, pc, ["confusion.svg"]


def _weights(rd: RunData, lang: str) -> list[str]:
    if not rd.state_dict_events:
        return [tr("no_weights", lang)]
    rows = []
    for e in rd.state_dict_events:
        ex = e.get("examples_missing") or []
        exu = e.get("examples_unexpected") or []
        rows.append([e.get("step"), e.get("module"), f"{e.get('loaded')} / {e.get('total')}", e.get("missing"),
                     e.get("unexpected"), e.get("strict"), ", ".join(f"`{k}`" for k in ex[:5]) or "–",
                     ", ".join(f"`{k}`" for k in exu[:5]) or "–"])
    out = _table([tr("step", lang), tr("module", lang), tr("keys", lang), tr("missing", lang),
                  tr("unexpected", lang), tr("strict", lang), tr("examples_missing", lang),
                  tr("examples_unexpected", lang)], rows)
    errs = [e for e in rd.state_dict_events if e.get("error")]
    for e in errs[:5]:
        out += ["", f"- `{e.get('module')}.load_state_dict` " + ("抛出异常" if lang == "zh" else "raised")
                + f": `{e.get('error')}`"]
    return out


def _write(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")


# ---------------------------------------------------------------------- entry point
def build_markdown(rd: RunData, out_dir: Path, lang: str = "en") -> tuple[str, list[str]]:
    """The Markdown text and the image files written into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    name = Path(str(rd.script or "?")).name
    md: list[str] = [f"# {tr('title', lang)}{'：' if lang == 'zh' else ': '}`{name}`", ""]
    if rd.status not in ("finished", "killed", "failed", "lost"):
        md += [f"> {tr('partial', lang)}", ""]
    # a one-line verdict
    fl = list(rd.state.findings.values())
    errors = [f for f in fl if f.severity == "error"]
    warns = [f for f in fl if f.severity == "warning"]
    if lang == "zh":
        md.append(f"{len(errors)} 个错误，{len(warns)} 个警告，共 {len(fl)} 条诊断发现。")
    else:
        md.append(f"{len(errors)} error(s), {len(warns)} warning(s), {len(fl)} finding(s) in all.")
    md.append("")
    md += [f"## {tr('run', lang)}", ""] + _facts(rd, lang) + [""]
    md += [f"## {tr('action', lang)}", ""] + _actions(rd, lang) + [""]
    md += [f"## {tr('miou', lang)}", ""] + _miou_section(rd, lang) + [""]
    md += [f"## {tr('findings', lang)} ({len(fl)})", ""] + _findings(rd, lang) + [""]
    md += [f"## {tr('checklist', lang)}", ""] + _checklist(rd, lang) + [""]
    curves, files = _curves(rd, out_dir, lang)
    md += [f"## {tr('curves', lang)}", ""]
    for c in curves:
        md += [c, ""]
    conf, per_class, cfiles = _confusion(rd, out_dir, lang)
    files += cfiles
    md += [f"## {tr('confusion', lang)}", ""] + conf + [""]
    md += [f"## {tr('per_class', lang)}", ""] + per_class + [""]
    md += [f"## {tr('weights', lang)}", ""] + _weights(rd, lang) + [""]
    md.append(f"<sub>segwatch · {_when(time.time())}</sub>")
    return "\n".join(md) + "\n", files


def render_markdown(run_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None,
                    lang: str | None = "en") -> Path:
    """Write ``report.md`` and its SVG images into ``out_dir`` (default ``RUN_DIR/report/``);
    returns the path of ``report.md``. ``lang``: "en", "zh", or None for the run's own
    (meta.json's ``lang``)."""
    if lang not in ("en", "zh", None):
        raise ValueError(f"lang must be 'en' or 'zh', got {lang!r}")
    rd = load_run(run_dir, lang)
    return write_markdown(rd, out_dir)


def write_markdown(rd: RunData, out_dir: str | os.PathLike | None = None) -> Path:
    out = Path(out_dir) if out_dir is not None else rd.run_dir / "report"
    text, _ = build_markdown(rd, out, rd.lang)
    path = out / "report.md"
    path.write_text(text, encoding="utf-8")
    return path
