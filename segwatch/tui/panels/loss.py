"""Loss / gradients: loss and gradient-norm curves, learning rate, non-finite counts and
the per-layer gradient norms of the last sampled step."""
from __future__ import annotations

import math
from typing import Any

from rich.text import Text
from textual.widgets import DataTable, Static

from segwatch.tui.panels.base import (Panel, age_note, is_old, reading, series_arrays, series_last, sget,
                                      value_style)
from segwatch.tui.text import fint, fnum, ui
from segwatch.tui.widgets import Plot, hbar


def loss_stats(state: Any, view: Any, lang: str = "en") -> Text:
    """LR, non-finite counts and the gradient/update fields of the last *sampled* step (a
    read-back's light step carries none of them), each with its step when old."""
    t = Text()
    r_lr = reading(state, "lr")
    lr = r_lr.value if r_lr is not None else series_last(sget(state, "lr"))
    last_ev = sget(state, "last_step_event") or getattr(view, "last_step", None) or {}
    r_step = reading(state, "sampled_step")
    step_ev = r_step.value if r_step is not None else last_ev
    lrs = sget(state, "lr_groups") or last_ev.get("lr")
    t.append("lr ", style="dim")
    if isinstance(lrs, list) and len(lrs) > 1:
        t.append(", ".join(fnum(x, 3) for x in lrs[:4]) + (" …" if len(lrs) > 4 else ""),
                 style=value_style(state, r_lr))
    else:
        t.append(fnum(lr, 3), style=value_style(state, r_lr, "bold red" if lr == 0 else ""))
    t.append_text(age_note(state, r_lr, lang))
    steps, losses = series_arrays(sget(state, "loss"))
    nonfinite_kept = sum(1 for v in losses if not math.isfinite(v))
    total = last_ev.get("loss_nonfinite_total")
    t.append("   non-finite loss ", style="dim")
    n = total if isinstance(total, int) else nonfinite_kept
    t.append(fint(n), style="bold red" if n else "green")
    gnf = step_ev.get("grad_nonfinite")
    t.append("   params with NaN/Inf grad ", style="dim")
    t.append(fint(gnf), style=value_style(state, r_step, "bold red" if gnf else "green"))
    t.append_text(age_note(state, r_step, lang))
    ur = step_ev.get("update_ratio")
    if ur is not None:
        t.append("   update ratio ", style="dim")
        t.append(fnum(ur, 3))
    scale = step_ev.get("scale")
    if scale is not None:
        t.append("   AMP scale ", style="dim")
        t.append(fnum(scale, 3))
    bt, ot = last_ev.get("backward_total"), last_ev.get("optimizer_steps_total")
    if bt is not None or ot is not None:
        t.append("\nbackward ", style="dim")
        t.append(fint(bt))
        t.append("  optimizer steps ", style="dim")
        skipped = isinstance(bt, int) and isinstance(ot, int) and ot < bt
        t.append(fint(ot), style="bold red" if skipped and ot == 0 else ("yellow" if skipped else ""))
        for key, label in (("no_grad", "params without grad"), ("never_stepped", "never stepped"),
                           ("eval_modules", "BN/dropout in eval")):
            val = step_ev.get(key)
            if val:
                t.append(f"  {label} ", style="dim")
                t.append(fint(val), style="yellow")
    return t


def last_note(state: Any, name: str, series_name: str, digits: int, lang: str) -> str:
    """``last 0.4861`` above a plot, ``last 0.4861 @ step 82`` when that value is old."""
    r = reading(state, name)
    value = r.value if r is not None else series_last(sget(state, series_name))
    return f"last {fnum(value, digits)}" + age_note(state, r, lang).plain


class LossPanel(Panel):
    DEFAULT_CSS = """
    LossPanel Plot { height: 7; }
    LossPanel #loss-stats { height: auto; margin: 1 0; }
    LossPanel DataTable { height: auto; max-height: 20; }
    """

    def compose(self):
        yield Plot(ui("h.loss", self.lang), id="loss-plot", color="cyan")
        yield Plot(ui("h.grad", self.lang), log=True, id="grad-plot", color="magenta")
        yield Static(id="loss-stats")
        yield Static(Text(ui("h.layers", self.lang), style="bold underline"), id="layers-head")
        table = DataTable(id="layer-norms", zebra_stripes=True, cursor_type="row", show_cursor=False)
        yield table

    def on_mount(self) -> None:
        table = self.query_one("#layer-norms", DataTable)
        table.add_column("layer", key="layer")
        table.add_column("grad norm", key="norm")
        table.add_column("share", key="share")

    def render_state(self, state: Any, view: Any) -> None:
        steps, values = series_arrays(sget(state, "loss"))
        self.query_one("#loss-plot", Plot).set_data(
            steps, values, note=last_note(state, "loss", "loss", 4, self.lang) if values else "")
        gsteps, gvalues = series_arrays(sget(state, "grad_norm"))
        self.query_one("#grad-plot", Plot).set_data(
            gsteps, gvalues, note=last_note(state, "grad_norm", "grad_norm", 3, self.lang) if gvalues else "")
        self.query_one("#loss-stats", Static).update(loss_stats(state, view, self.lang))
        r = reading(state, "layer_norms")
        head = Text(ui("h.layers", self.lang), style="bold underline")
        if r is not None:
            head.append(f" @ step {r.step:,}" if self.lang != "zh" else f" @第 {r.step:,} 步",
                        style="dim italic" if is_old(state, r) else "dim")
        self.query_one("#layers-head", Static).update(head)
        table = self.query_one("#layer-norms", DataTable)
        table.clear()
        norms = list(sget(state, "layer_norms", []))
        finite = [n for _, n in norms if isinstance(n, (int, float)) and math.isfinite(n)]
        top = max(finite) if finite else 0.0
        for name, norm in norms[:32]:
            ok = isinstance(norm, (int, float)) and math.isfinite(norm)
            share = (norm / top) if ok and top > 0 else 0.0
            table.add_row(str(name), Text(fnum(norm, 3), style="" if ok else "bold red"),
                          Text(hbar(share, 12), style="magenta"))
