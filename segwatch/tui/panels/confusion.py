"""Confusion: the last evaluation's matrix as a heatmap with class names (top-k classes
when they do not all fit), the per-class IoU / GT / Pred / Correct table, both mIoU
conventions, and the collapse signature mIoU = p_c / C when one class is predicted."""
from __future__ import annotations

import math
from typing import Any

import numpy as np
from rich.table import Table
from rich.text import Text
from textual.widgets import Static

from segwatch.core import metrics
from segwatch.tui.panels.base import Panel, sget
from segwatch.tui.text import class_name, fint, fnum, ui
from segwatch.tui.widgets import Heatmap


def summary_block(state: Any, m: np.ndarray | None, lang: str) -> Text:
    evals = sget(state, "evals", [])
    last = evals[-1] if evals else {}
    last = last if isinstance(last, dict) else {}
    t = Text()
    if m is None:
        t.append(ui("no_eval", lang), style="dim")
        if last:
            t.append("\n")
            t.append(f"last evaluation: {_eval_facts(last)}", style="yellow")
        return t
    c = m.shape[0]
    total = int(m.sum())
    t.append("evaluation ", style="dim")
    t.append(f"{len(evals)}" if evals else "?")
    if last.get("step") is not None:
        t.append(f" at step {fint(last.get('step'))}", style="dim")
    t.append(f"   {c} classes   ", style="dim")
    t.append(f"{fint(total)} px counted", style="bold red" if total == 0 else "")
    t.append("\nmIoU guide ", style="dim")
    t.append(f"{fnum(metrics.miou_guide(m), 4)}%", style="bold")
    t.append(" (NaN→0, mean over all C)", style="dim")
    t.append("   mmseg ", style="dim")
    t.append(f"{fnum(metrics.miou_mmseg(m), 4)}%", style="bold")
    t.append(" (mean over present classes)", style="dim")
    acc = metrics.pixel_accuracy(m)
    t.append("   pixel acc ", style="dim")
    t.append(f"{fnum(acc, 4)}%")
    history = sget(state, "miou", [])
    if len(history) > 1:
        t.append("\nhistory (guide / mmseg): ", style="dim")
        t.append("  ".join(f"@{h[0]} {fnum(h[1], 3)}/{fnum(h[2], 3)}" for h in history[-6:]))
    script = sget(state, "script_metrics", [])
    if script:
        t.append("\nthe script printed ", style="dim")
        t.append("  ".join(f"@{s[0]} {fnum(s[1], 4)}" for s in script[-4:]))
    facts = _eval_facts(last)
    if facts:
        t.append("\n" + facts, style="yellow")
    if total == 0:
        t.append("\nthe matrix is empty: no labelled pixel was counted (metric.cm_empty)", style="bold red")
    sig = metrics.collapse_signature(m)
    if sig:
        k = sig["class"]
        t.append("\ncollapse signature: ", style="bold red")
        t.append(f"only class {k} ({class_name(sget(state, 'class_names'), k)}) is predicted; "
                 f"p_c = {sig['share'] * 100:.2f}% of GT pixels, so mIoU = p_c / C = "
                 f"{sig['share'] * 100:.2f} / {c} = {sig['expected_miou']:.2f}% "
                 f"(observed {sig['observed_miou']:.2f}%)")
    return t


def _eval_facts(ev: dict) -> str:
    parts = []
    if ev.get("aborted"):
        parts.append("ABORTED before the loader was exhausted")
    exc = ev.get("exception")
    if isinstance(exc, dict) and exc:
        parts.append(f"exception {exc.get('type')}: {exc.get('message')} at {exc.get('where')}")
    if ev.get("oor"):
        parts.append(f"{fint(ev.get('oor'))} label px outside the valid set (not counted)")
    if ev.get("size_mismatch"):
        parts.append(f"{fint(ev.get('size_mismatch'))} batches with pred/label size mismatch (not counted)")
    return "; ".join(parts)


def per_class_table(state: Any, m: np.ndarray) -> Table:
    names = sget(state, "class_names")
    gt, pred, correct = metrics.class_totals(m)
    iou = metrics.iou_per_class(m)
    table = Table(box=None, padding=(0, 1), header_style="bold dim")
    for col, just in (("", "right"), ("class", "left"), ("IoU %", "right"), ("GT", "right"),
                      ("Pred", "right"), ("Correct", "right")):
        table.add_column(col, justify=just, no_wrap=True)
    for i in range(m.shape[0]):
        v = iou[i]
        if math.isnan(v):
            iou_txt = Text("nan", style="dim")
        else:
            iou_txt = Text(f"{v * 100:.2f}", style="green" if v >= 0.5 else ("yellow" if v > 0 else "red"))
        table.add_row(str(i), class_name(names, i), iou_txt, fint(gt[i]),
                      Text(fint(pred[i]), style="bold red" if pred[i] == m.sum() and m.sum() > 0 else ""),
                      fint(correct[i]))
    return table


class ConfusionPanel(Panel):
    DEFAULT_CSS = """
    ConfusionPanel #cm-summary { height: auto; margin-bottom: 1; }
    ConfusionPanel #cm-table { height: auto; margin-top: 1; }
    """

    def compose(self):
        yield Static(id="cm-summary")
        yield Static(Text(ui("h.heatmap", self.lang), style="bold underline"), id="cm-head")
        yield Heatmap(id="cm-heatmap")
        yield Static(id="cm-table")

    _drawn_key: tuple | None = None

    def render_state(self, state: Any, view: Any) -> None:
        # the matrix changes once per evaluation: skip the (large) redraw in between
        key = (len(sget(state, "evals", [])), id(sget(state, "confusion")), len(sget(state, "miou", [])),
               len(sget(state, "script_metrics", [])), self.size.width)
        if key == self._drawn_key:
            return
        m = sget(state, "confusion")
        m = None if m is None else np.asarray(m, dtype=np.int64)
        self.query_one("#cm-summary", Static).update(summary_block(state, m, self.lang))
        self.query_one("#cm-heatmap", Heatmap).set_matrix(m, sget(state, "class_names"), self.lang)
        self.query_one("#cm-head", Static).display = m is not None
        table = self.query_one("#cm-table", Static)
        if m is None:
            table.update("")
        else:
            from rich.console import Group
            table.update(Group(Text(ui("h.per_class", self.lang), style="bold underline"), per_class_table(state, m)))
        self._drawn_key = key  # only once everything was drawn
