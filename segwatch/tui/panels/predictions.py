"""Predictions: how many classes the model predicts over time, the dominant class share,
and the predicted vs ground-truth class distribution of the last sample."""
from __future__ import annotations

from typing import Any

import numpy as np
from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.widgets import Static

from segwatch.tui.panels.base import Panel, is_old, reading, series_arrays, series_last, sget, value_style
from segwatch.tui.text import class_name, fpct, ui
from segwatch.tui.widgets import Plot, hbar


def _source(state: Any, r: Any, lang: str) -> Text:
    """Where the shown predictions come from: `` — training sample @ step 120`` or
    `` — evaluation 2 @ step 300`` (dimmed italic when old)."""
    if r is None:
        return Text("")
    p = r.value
    if p.get("phase") == "val":
        what = f"evaluation {p.get('eval_index')}" if lang != "zh" else f"第 {p.get('eval_index')} 次评估"
    else:
        what = "training sample" if lang != "zh" else "训练采样"
    where = f" @ step {r.step:,}" if lang != "zh" else f" @第 {r.step:,} 步"
    return Text(f" — {what}{where}", style="dim italic" if is_old(state, r) else "dim")


def distribution_block(state: Any, lang: str, top: int = 10):
    head = Text(ui("h.pred_vs_gt", lang), style="bold underline")
    r = reading(state, "preds")
    if r is not None:
        pred, gt = r.value.get("hist"), r.value.get("gt_hist")
        head.append_text(_source(state, r, lang))
    else:
        pred = sget(state, "pred_hist")
        gt = sget(state, "gt_hist")
    pred = np.asarray(pred if pred is not None else [], dtype=np.float64)
    gt = np.asarray(gt if gt is not None else [], dtype=np.float64)
    if pred.size == 0 or pred.sum() == 0:
        return Group(head, Text(ui("no_preds", lang), style="dim"))
    n = max(pred.size, gt.size)
    p = np.zeros(n)
    p[: pred.size] = pred
    g = np.zeros(n)
    g[: gt.size] = gt
    pf = p / p.sum()
    gf = g / g.sum() if g.sum() > 0 else np.zeros(n)
    names = sget(state, "class_names")
    order = sorted(range(n), key=lambda i: (-max(pf[i], gf[i]), i))
    order = [i for i in order if pf[i] > 0 or gf[i] > 0][:top]
    table = Table(box=None, padding=(0, 1), header_style="bold dim", style="dim" if is_old(state, r) else "")
    table.add_column("", justify="right", style="dim")
    table.add_column("class", no_wrap=True, overflow="ellipsis", max_width=14)
    table.add_column("GT", no_wrap=True)
    table.add_column("", justify="right")
    table.add_column("Pred", no_wrap=True)
    table.add_column("", justify="right")
    for i in order:
        table.add_row(str(i), class_name(names, i),
                      Text(hbar(gf[i], 14), style="green"), fpct(gf[i]),
                      Text(hbar(pf[i], 14), style="red" if pf[i] > 0.95 else "cyan"), fpct(pf[i]))
    shown = len(order)
    present_pred = int((p > 0).sum())
    present_gt = int((g > 0).sum())
    foot = Text(f"{present_pred} classes predicted, {present_gt} in the ground truth; top {shown} shown",
                style="dim")
    return Group(head, table, foot)


def dominant_line(state: Any, lang: str) -> Text:
    """The dominant class, its share and the number of predicted classes: the same
    ``preds`` reading the overview and the checklist quote, with where it comes from."""
    t = Text()
    r = reading(state, "preds")
    c = sget(state, "num_classes")
    if r is not None:
        p = r.value
        pred, share, uniq, dom = p.get("hist"), p.get("dominant_share"), p.get("unique"), p.get("dominant_class")
    else:
        pred = sget(state, "pred_hist")
        share = series_last(sget(state, "dominant_share"))
        uniq = series_last(sget(state, "pred_unique"))
        dom = int(np.argmax(pred)) if pred is not None and np.size(pred) else None
    if pred is None or np.size(pred) == 0 or np.sum(pred) == 0 or dom is None:
        return Text(ui("no_preds", lang), style="dim")
    t.append("dominant class ", style="dim")
    t.append(f"{dom} {class_name(sget(state, 'class_names'), dom)}", style=value_style(state, r, "bold"))
    t.append(" at ", style="dim")
    t.append(fpct(share) if share is not None else fpct(float(np.max(pred)) / float(np.sum(pred))),
             style=value_style(state, r, "bold red" if share is not None and share >= 0.95 else "bold"))
    t.append("   classes predicted ", style="dim")
    if uniq is not None:
        t.append(f"{int(uniq)}" + (f"/{c}" if c else ""), style=value_style(state, r, "bold red" if uniq <= 1 else "bold"))
    t.append_text(_source(state, r, lang))
    if uniq is not None and uniq <= 1:
        t.append("   ← collapse: one class everywhere" if lang != "zh" else "   ← collapse：只预测一个类别",
                 style="bold red")
    return t


class PredictionsPanel(Panel):
    DEFAULT_CSS = """
    PredictionsPanel Plot { height: 6; }
    PredictionsPanel Static { height: auto; margin-top: 1; }
    """

    def compose(self):
        yield Static(id="pred-dominant")
        yield Plot(ui("h.pred_unique", self.lang), id="pred-unique-plot", color="green")
        yield Plot(ui("h.dominant", self.lang), id="pred-dominant-plot", color="yellow")
        yield Static(id="pred-dist")

    def render_state(self, state: Any, view: Any) -> None:
        self.query_one("#pred-dominant", Static).update(dominant_line(state, self.lang))
        steps, values = series_arrays(sget(state, "pred_unique"))
        self.query_one("#pred-unique-plot", Plot).set_data(steps, values)
        steps, values = series_arrays(sget(state, "dominant_share"))
        self.query_one("#pred-dominant-plot", Plot).set_data(steps, [v * 100 for v in values], note="%")
        self.query_one("#pred-dist", Static).update(distribution_block(state, self.lang))
