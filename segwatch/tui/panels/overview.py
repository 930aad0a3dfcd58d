"""The default tab: the key numbers, the checklist and the findings, sized for 80x24."""
from __future__ import annotations

import math
from typing import Any

from rich.text import Text
from textual.containers import Container
from textual.widgets import Static

from segwatch.tui.panels.base import Panel, age_note, reading, series_last, sget, value_style
from segwatch.tui.panels.checklist import ChecklistView
from segwatch.tui.panels.findings import FindingsView
from segwatch.tui.text import class_name, fnum, fpct


def _value(state: Any, name: str, series_name: str | None = None):
    """(value, reading) of a shown number: the state's reading, else the series' last."""
    r = reading(state, name)
    if r is not None:
        return r.value, r
    return (series_last(sget(state, series_name)) if series_name else None), None


def key_numbers(state: Any, lang: str, width: int = 100) -> Text:
    """The key numbers line. Each one comes from its state reading; an old one is dimmed
    and says the step it was measured at."""
    t = Text()
    t.append("loss ", style="dim")
    loss, r = _value(state, "loss", "loss")
    bad = isinstance(loss, float) and not math.isfinite(loss)
    t.append(fnum(loss), style=value_style(state, r, "bold red" if bad else "bold"))
    t.append_text(age_note(state, r, lang))
    t.append("  grad ", style="dim")
    grad, r = _value(state, "grad_norm", "grad_norm")
    t.append(fnum(grad, 3), style=value_style(state, r))
    t.append_text(age_note(state, r, lang))
    t.append("  lr ", style="dim")
    lr, r = _value(state, "lr", "lr")
    t.append(fnum(lr, 3), style=value_style(state, r))
    t.append_text(age_note(state, r, lang))
    c = sget(state, "num_classes")
    t.append("  pred classes ", style="dim")
    r = reading(state, "preds")
    p = r.value if r is not None else {}
    uniq = p.get("unique")
    if uniq is not None:
        style = "bold red" if uniq <= 1 else ("yellow" if uniq < 5 else "green")
        t.append(f"{int(uniq)}", style=value_style(state, r, style))
        t.append(f"/{c}" if c else "", style=value_style(state, r))
    else:
        t.append("–")
    share = p.get("dominant_share")
    if share is not None and not (isinstance(share, float) and math.isnan(share)):
        t.append("  dominant ", style="dim")
        t.append(fpct(share), style=value_style(state, r, "bold red" if share >= 0.95 else ""))
        if p.get("dominant_class") is not None:
            t.append(" " + class_name(sget(state, "class_names"), int(p["dominant_class"])),
                     style=value_style(state, r))
    if uniq is not None:
        t.append_text(age_note(state, r, lang))
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
        # the key numbers depend on the width (the mIoU trend): a render made before the
        # layout (width 0) is redone at the real width, so the screen does not depend on timing
        self.rerender()

    def render_state(self, state: Any, view: Any) -> None:
        self.query_one("#keys", Static).update(key_numbers(state, self.lang, self.size.width or 100))
        self.query_one("#overview-checklist", ChecklistView).show(state, self.lang)
        self.query_one("#overview-findings", FindingsView).show(state, self.lang)
