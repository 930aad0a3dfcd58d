"""Loss / gradients: loss and gradient-norm curves, learning rate, non-finite counts and
the per-layer gradient norms of the last sampled step."""
from __future__ import annotations

import math
from typing import Any

from rich.text import Text
from textual.widgets import DataTable, Static

from segwatch.tui.panels.base import Panel, series_arrays, series_last, sget
from segwatch.tui.text import fint, fnum, ui
from segwatch.tui.widgets import Plot, hbar


def loss_stats(state: Any, view: Any) -> Text:
    t = Text()
    lr = series_last(sget(state, "lr"))
    step_ev = getattr(view, "last_step", None) or {}
    lrs = step_ev.get("lr")
    t.append("lr ", style="dim")
    if isinstance(lrs, list) and len(lrs) > 1:
        t.append(", ".join(fnum(x, 3) for x in lrs[:4]) + (" …" if len(lrs) > 4 else ""))
    else:
        t.append(fnum(lr, 3), style="bold red" if lr == 0 else "")
    steps, losses = series_arrays(sget(state, "loss"))
    nonfinite_kept = sum(1 for v in losses if not math.isfinite(v))
    total = step_ev.get("loss_nonfinite_total")
    t.append("   non-finite loss ", style="dim")
    n = total if isinstance(total, int) else nonfinite_kept
    t.append(fint(n), style="bold red" if n else "green")
    gnf = step_ev.get("grad_nonfinite")
    t.append("   params with NaN/Inf grad ", style="dim")
    t.append(fint(gnf), style="bold red" if gnf else "green")
    ur = step_ev.get("update_ratio")
    if ur is not None:
        t.append("   update ratio ", style="dim")
        t.append(fnum(ur, 3))
    scale = step_ev.get("scale")
    if scale is not None:
        t.append("   AMP scale ", style="dim")
        t.append(fnum(scale, 3))
    bt, ot = step_ev.get("backward_total"), step_ev.get("optimizer_steps_total")
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
        last = series_last(sget(state, "loss"))
        self.query_one("#loss-plot", Plot).set_data(steps, values, note=f"last {fnum(last)}" if values else "")
        gsteps, gvalues = series_arrays(sget(state, "grad_norm"))
        glast = series_last(sget(state, "grad_norm"))
        self.query_one("#grad-plot", Plot).set_data(gsteps, gvalues, note=f"last {fnum(glast, 3)}" if gvalues else "")
        self.query_one("#loss-stats", Static).update(loss_stats(state, view))
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
