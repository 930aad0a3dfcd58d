"""Findings: severity, first step, id, evidence and advice (English or Chinese)."""
from __future__ import annotations

from typing import Any

from rich.console import Group
from rich.padding import Padding
from rich.table import Table
from rich.text import Text
from textual.widgets import Static

from segwatch.tui.panels.base import Panel, sget
from segwatch.tui.text import compact_evidence, fint, ui

SEVERITY = {
    "error": ("✗", "bold red", 0),
    "warning": ("!", "bold yellow", 1),
    "info": ("i", "bold blue", 2),
}


def _get(f: Any, name: str, default: Any = None) -> Any:
    if isinstance(f, dict):
        return f.get(name, default)
    return getattr(f, name, default)


def advice_of(f: Any, lang: str) -> str:
    adv = _get(f, "advice")
    if callable(adv):
        try:
            return str(adv(lang))
        except TypeError:
            return str(adv())
    return str(adv or "")


def ordered(findings: Any) -> list:
    """Errors first, then warnings, then info; earliest first within a severity."""
    if isinstance(findings, dict):
        items = list(findings.values())
    else:
        items = list(findings or [])

    def key(f):
        sev = SEVERITY.get(_get(f, "severity", "info"), ("?", "", 3))[2]
        step = _get(f, "first_step")
        return (sev, step if isinstance(step, int) else 1 << 60)

    return sorted(items, key=key)


def summary_counts(findings: Any) -> dict[str, int]:
    counts = {"error": 0, "warning": 0, "info": 0}
    for f in ordered(findings):
        sev = _get(f, "severity", "info")
        counts[sev] = counts.get(sev, 0) + 1
    return counts


class FindingsView(Static):
    """Compact: one line per finding (overview). Full: evidence and advice too."""

    DEFAULT_CSS = """
    FindingsView { height: auto; }
    """

    def __init__(self, compact: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        self.compact = compact

    def show(self, state: Any, lang: str) -> None:
        items = ordered(sget(state, "findings", {}))
        c = summary_counts(items)
        head = Text(ui("h.findings", lang), style="bold underline")
        head.append(f"   ✗{c['error']}  !{c['warning']}  i{c['info']}", style="dim")
        if not items:
            self.update(Text.assemble(head, "\n", Text(ui("no_findings", lang), style="green")))
            return
        if self.compact:
            table = Table.grid(padding=(0, 1), expand=True)
            table.add_column(width=1, no_wrap=True)
            table.add_column(no_wrap=True, justify="right", style="dim")
            table.add_column(no_wrap=True)
            table.add_column(ratio=1, no_wrap=True, overflow="ellipsis", style="dim")
            for f in items:
                icon, style, _ = SEVERITY.get(_get(f, "severity", "info"), ("?", "bold", 3))
                step = _get(f, "first_step")
                table.add_row(Text(icon, style=style), f"@{fint(step)}" if step is not None else "",
                              Text(str(_get(f, "id", "?")), style=style),
                              compact_evidence(_get(f, "evidence"), limit=4))
            self.update(Group(head, table))
            return
        parts: list = [head]
        for f in items:
            sev = _get(f, "severity", "info")
            icon, style, _ = SEVERITY.get(sev, ("?", "bold", 3))
            line = Text()
            line.append(f"{icon} {sev.upper():<7} ", style=style)
            line.append(str(_get(f, "id", "?")), style="bold")
            step = _get(f, "first_step")
            if step is not None:
                line.append(f"  step {fint(step)}", style="dim")
            phase = _get(f, "phase")
            if phase:
                line.append(f" ({phase})", style="dim")
            count = _get(f, "count")
            if isinstance(count, int) and count > 1:
                line.append(f"  ×{count}", style="dim")
            last = _get(f, "last_step")
            if isinstance(last, int) and last != step:
                line.append(f"  last {fint(last)}", style="dim")
            parts.append(Text(""))
            parts.append(line)
            ev = compact_evidence(_get(f, "evidence"), limit=10)
            if ev:
                parts.append(Padding(Text.assemble((ui("evidence", lang) + ": ", "dim"), ev), (0, 0, 0, 2)))
            adv = advice_of(f, lang)
            if adv:
                parts.append(Padding(Text.assemble((ui("advice", lang) + ": ", "dim"), adv), (0, 0, 0, 2)))
        self.update(Group(*parts))


class FindingsPanel(Panel):
    def compose(self):
        yield FindingsView(compact=False, id="findings-full")

    def render_state(self, state: Any, view: Any) -> None:
        self.query_one("#findings-full", FindingsView).show(state, self.lang)
