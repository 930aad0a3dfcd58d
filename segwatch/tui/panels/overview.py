"""The default tab: the key numbers, the checklist and the findings, sized for 80x24."""
from __future__ import annotations

import math
from typing import Any

import numpy as np
from rich.text import Text
from textual.containers import Container
from textual.widgets import Static

from segwatch.tui.panels.base import Panel, series_last, sget
from segwatch.tui.panels.checklist import ChecklistView
from segwatch.tui.panels.findings import FindingsView
from segwatch.tui.text import class_name, fnum, fpct


def key_numbers(state: Any, lang: str, width: int = 100) -> Text:
    t = Text()
    t.append("loss ", style="dim")
    loss = series_last(sget(state, "loss"))
    bad = isinstance(loss, float) and not math.isfinite(loss)
    t.append(fnum(loss), style="bold red" if bad else "bold")
    t.append("  grad ", style="dim")
    t.append(fnum(series_last(sget(state, "grad_norm")), 3))
    t.append("  lr ", style="dim")
    t.append(fnum(series_last(sget(state, "lr")), 3))
    c = sget(state, "num_classes")
    uniq = series_last(sget(state, "pred_unique"))
    t.append("  pred classes ", style="dim")
    if uniq is not None and not (isinstance(uniq, float) and math.isnan(uniq)):
        style = "bold red" if uniq <= 1 else ("yellow" if uniq < 5 else "green")
        t.append(f"{int(uniq)}", style=style)
        t.append(f"/{c}" if c else "")
    else:
        t.append("–")
    share = series_last(sget(state, "dominant_share"))
    pred_hist = sget(state, "pred_hist")
    if share is not None and not (isinstance(share, float) and math.isnan(share)):
        t.append("  dominant ", style="dim")
        t.append(fpct(share), style="bold red" if share >= 0.95 else "")
        if pred_hist is not None and np.size(pred_hist) and np.sum(pred_hist) > 0:
            t.append(" " + class_name(sget(state, "class_names"), int(np.argmax(pred_hist))))
    t.append("\n")
    miou = sget(state, "miou", [])
    t.append("mIoU ", style="dim")
    if miou:
        last = miou[-1]
        step, guide, mmseg = (list(last) + [None, None, None])[:3]
        t.append("guide ", style="dim")
        t.append(f"{fnum(guide, 4)}%", style="bold")
        t.append("  mmseg ", style="dim")
        t.append(f"{fnum(mmseg, 4)}%", style="bold")
        t.append(f"  (evaluation {len(miou)} at step {step})", style="dim")
        if len(miou) >= 2 and width >= 100:
            t.append("  trend ", style="dim")
            t.append(" → ".join(fnum(m[1], 3) for m in miou[-4:]))
    else:
        t.append("no evaluation yet" if lang != "zh" else "尚无评估", style="dim")
    return t


class OverviewPanel(Panel):
    DEFAULT_CSS = """
    OverviewPanel #keys { height: auto; }
    OverviewPanel #overview-body { height: auto; layout: vertical; }
    OverviewPanel.wide #overview-body { layout: horizontal; }
    OverviewPanel.wide #overview-body > * { width: 1fr; }
    OverviewPanel.wide #overview-checklist { margin-right: 2; }
    """
    #: from this width on, the checklist and the findings stand side by side
    WIDE = 160

    def compose(self):
        yield Static(id="keys")
        with Container(id="overview-body"):
            yield ChecklistView(id="overview-checklist")
            yield FindingsView(compact=True, id="overview-findings")

    def on_resize(self, event) -> None:
        wide = event.size.width >= self.WIDE
        if wide != self.has_class("wide"):
            self.set_class(wide, "wide")
            # side by side there is room for the evidence and the advice
            self.query_one("#overview-findings", FindingsView).compact = not wide
            self.rerender()

    def render_state(self, state: Any, view: Any) -> None:
        self.query_one("#keys", Static).update(key_numbers(state, self.lang, self.size.width or 100))
        self.query_one("#overview-checklist", ChecklistView).show(state, self.lang)
        self.query_one("#overview-findings", FindingsView).show(state, self.lang)
