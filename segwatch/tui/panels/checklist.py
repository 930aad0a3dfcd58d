"""The checklist of the guide (9 items), ticking live: ✓ ok / ! warn / ✗ fail / · pending."""
from __future__ import annotations

from typing import Any

from rich.table import Table
from rich.text import Text
from textual.widgets import Static

from segwatch.tui.panels.base import sget
from segwatch.tui.text import ui

ICONS = {
    "ok": ("✓", "bold green"),
    "warn": ("!", "bold yellow"),
    "fail": ("✗", "bold red"),
    "pending": ("·", "dim"),
}


def _get(item: Any, name: str, default: Any = None) -> Any:
    if isinstance(item, dict):
        return item.get(name, default)
    return getattr(item, name, default)


def item_title(item: Any, lang: str) -> str:
    title = _get(item, "title")
    if callable(title):
        try:
            return str(title(lang))
        except TypeError:
            return str(title())
    return str(title or _get(item, "id", "?"))


def checklist_table(items: list, lang: str) -> Table:
    table = Table.grid(padding=(0, 1), expand=True)
    table.add_column(width=1, no_wrap=True)
    table.add_column(ratio=2, no_wrap=True, overflow="ellipsis")
    table.add_column(ratio=3, no_wrap=True, overflow="ellipsis", style="dim")
    for item in items:
        state = _get(item, "state", "pending")
        icon, style = ICONS.get(state, ("?", "bold"))
        # evidence quoting an old value (it ends with "@ step N") is set apart in italics
        evidence = Text(str(_get(item, "evidence", "") or ""), style="italic" if _get(item, "old") else "")
        table.add_row(Text(icon, style=style), Text(item_title(item, lang)), evidence)
    return table


class ChecklistView(Static):
    DEFAULT_CSS = """
    ChecklistView { height: auto; }
    """

    def show(self, state: Any, lang: str) -> None:
        items = list(sget(state, "checklist", []))
        counts = {k: 0 for k in ICONS}
        for item in items:
            counts[_get(item, "state", "pending")] = counts.get(_get(item, "state", "pending"), 0) + 1
        head = Text(ui("h.checklist", lang), style="bold underline")
        head.append(f"   ✓{counts['ok']}  !{counts['warn']}  ✗{counts['fail']}  ·{counts['pending']}", style="dim")
        if not items:
            self.update(Text.assemble(head, "\n", Text(ui("none_yet", lang), style="dim")))
            return
        from rich.console import Group
        self.update(Group(head, checklist_table(items, lang)))
