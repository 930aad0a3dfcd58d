"""Data: label range and values vs the valid set, ignore ratio, the class histogram
with class names, and per-input statistics (mean/std/min/max/non-finite)."""
from __future__ import annotations

from typing import Any

import numpy as np
from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.widgets import Static

from segwatch.tui.panels.base import Panel, is_old, reading, sget
from segwatch.tui.text import class_name, fint, fnum, fpct, ui
from segwatch.tui.widgets import hbar


def measured_at(state: Any, name: str, lang: str) -> Text:
    """`` @ step N`` after a heading: the step its reading was measured at (dimmed italic
    when old, so the block is not read as current)."""
    r = reading(state, name)
    if r is None:
        return Text("")
    return Text(f" @ step {r.step:,}" if lang != "zh" else f" @第 {r.step:,} 步",
                style="dim italic" if is_old(state, r) else "dim")


def labels_block(state: Any, lang: str) -> Text:
    lab = sget(state, "last_labels")
    t = Text(ui("h.labels", lang), style="bold underline")
    t.append_text(measured_at(state, "labels", lang))
    if not isinstance(lab, dict):
        t.append("\n" + ui("no_labels", lang), style="dim")
        return t
    c = sget(state, "num_classes")
    t.append("\n")
    t.append("key ", style="dim")
    t.append(str(lab.get("key", "?")))
    t.append("  shape ", style="dim")
    t.append(str(lab.get("shape", "?")))
    t.append("  dtype ", style="dim")
    t.append(str(lab.get("dtype", "?")))
    t.append("\nrange ", style="dim")
    lo, hi = lab.get("min"), lab.get("max")
    t.append(f"[{fnum(lo)}, {fnum(hi)}]", style="bold")
    t.append("   valid set ", style="dim")
    t.append(f"0..{c - 1}" if c else "?")
    configured = sget(state, "ignore_index")
    inferred = sget(state, "inferred_ignore")
    t.append(" + ignore ", style="dim")
    t.append(f"{configured}" if configured is not None else "none")
    t.append(" (configured)", style="dim")
    if inferred is not None:
        t.append(f"  {inferred}", style="bold")
        t.append(" (inferred from the data)", style="dim")

    hist = lab.get("hist") or []
    present = [i for i, n in enumerate(hist) if n]
    t.append("\nclasses in batch ", style="dim")
    t.append(f"{len(present)}")
    t.append(f" of {c}" if c else "")
    if present and len(present) <= 12:
        t.append("  [" + ", ".join(str(i) for i in present) + "]", style="dim")
    total = lab.get("total") or 0
    ignore = lab.get("ignore") or 0
    oor = lab.get("oor") or {}
    t.append("\nignore ", style="dim")
    ratio = ignore / total if total else None
    t.append(fpct(ratio), style="bold red" if ratio is not None and ratio >= 0.999 else "bold")
    t.append(f"  ({fint(ignore)} of {fint(total)} px equal the configured value {lab.get('ignore_value')})",
             style="dim")
    inferred_px = oor.get(str(inferred)) if inferred is not None and inferred != lab.get("ignore_value") else None
    if inferred_px:
        share = inferred_px / total if total else None
        t.append("\n       ")
        t.append(fpct(share), style="bold red" if share is not None and share >= 0.999 else "bold yellow")
        t.append(f"  ({fint(inferred_px)} px equal {inferred}, the ignore value the data uses)", style="dim")
    if oor:
        t.append("\nvalues outside the valid set: ", style="dim")
        parts = []
        for value, count in list(oor.items())[:8]:
            is_ignore = inferred is not None and str(value) == str(inferred)
            parts.append((f"{value}×{fint(count)}", "yellow" if is_ignore else "bold red"))
        for i, (s, style) in enumerate(parts):
            if i:
                t.append(", ")
            t.append(s, style=style)
    else:
        t.append("\nno values outside the valid set", style="green")
    frac = lab.get("fractional")
    boundary = lab.get("boundary")
    t.append("\nnon-integer ", style="dim")
    t.append(fint(frac), style="bold red" if frac else "")
    t.append("  interpolation boundary ", style="dim")
    t.append(fpct(boundary, 2) if boundary is not None else "–")
    if is_old(state, reading(state, "labels")):
        t.stylize("dim", len(ui("h.labels", lang)))  # an old batch is not read as the current one
    return t


def class_hist_block(state: Any, lang: str, top: int = 12) -> Group:
    head = Text(ui("h.class_hist", lang), style="bold underline")
    head.append_text(measured_at(state, "labels", lang))
    hist = sget(state, "label_hist")
    if hist is None or np.size(hist) == 0 or np.sum(hist) == 0:
        return Group(head, Text(ui("no_labels", lang), style="dim"))
    hist = np.asarray(hist, dtype=np.float64)
    total = hist.sum()
    names = sget(state, "class_names")
    order = [int(i) for i in np.argsort(-hist, kind="stable") if hist[i] > 0]
    table = Table.grid(padding=(0, 1))
    table.add_column(justify="right", style="dim")
    table.add_column(no_wrap=True, overflow="ellipsis", max_width=16)
    table.add_column(no_wrap=True)
    table.add_column(justify="right")
    top_share = hist[order[0]] / total
    for i in order[:top]:
        share = hist[i] / total
        table.add_row(str(i), class_name(names, i), Text(hbar(share / top_share, 24), style="cyan"), fpct(share))
    rest = order[top:]
    parts: list = [head, table]
    missing = int(np.sum(hist == 0))
    tail = Text(style="dim")
    if rest:
        tail.append(f"… {len(rest)} more classes ({fpct(hist[rest].sum() / total)})  ")
    if missing:
        tail.append(f"{missing} of {len(hist)} classes never seen")
    if tail.plain:
        parts.append(tail)
    return Group(*parts)


def inputs_block(state: Any, lang: str):
    head = Text(ui("h.inputs", lang), style="bold underline")
    head.append_text(measured_at(state, "inputs", lang))
    inputs = sget(state, "last_inputs", [])
    if not inputs:
        return Group(head, Text(ui("no_inputs", lang), style="dim"))
    old = is_old(state, reading(state, "inputs"))
    table = Table(box=None, padding=(0, 1), header_style="bold dim", style="dim" if old else "")
    for col in ("input", "shape", "dtype", "mean", "std", "min", "max", "non-finite"):
        table.add_column(col, justify="left" if col in ("input", "shape", "dtype") else "right", no_wrap=True)
    for inp in inputs:
        if not isinstance(inp, dict):
            continue
        nonfinite = inp.get("nonfinite") or 0
        lo, hi = inp.get("min"), inp.get("max")
        big = isinstance(hi, (int, float)) and hi > 20
        table.add_row(
            str(inp.get("key", "?")), str(inp.get("shape", "")), str(inp.get("dtype", "")),
            fnum(inp.get("mean"), 3), fnum(inp.get("std"), 3), fnum(lo, 3),
            Text(fnum(hi, 3), style="yellow" if big else ""),
            Text(fint(nonfinite), style="bold red" if nonfinite else "green"),
        )
    return Group(head, table)


class DataPanel(Panel):
    DEFAULT_CSS = """
    DataPanel Static { height: auto; margin-bottom: 1; }
    """

    def compose(self):
        yield Static(id="data-labels")
        yield Static(id="data-hist")
        yield Static(id="data-inputs")

    def render_state(self, state: Any, view: Any) -> None:
        self.query_one("#data-labels", Static).update(labels_block(state, self.lang))
        self.query_one("#data-hist", Static).update(class_hist_block(state, self.lang))
        self.query_one("#data-inputs", Static).update(inputs_block(state, self.lang))
