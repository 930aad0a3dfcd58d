"""Output: the child's stdout / stderr lines (stderr in red), tailing live."""
from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.widgets import RichLog

from segwatch.tui.panels.base import Panel, sget


class OutputPanel(Panel):
    DEFAULT_CSS = """
    OutputPanel { padding: 0; }
    OutputPanel RichLog { height: 1fr; }
    """

    def __init__(self, lang: str = "en", **kwargs) -> None:
        super().__init__(lang=lang, **kwargs)
        self.written = 0  # output events already written (counted over the whole stream)

    def compose(self):
        yield RichLog(id="output-log", max_lines=5000, wrap=False, markup=False, highlight=False)

    def render_state(self, state: Any, view: Any) -> None:
        log = self.query_one("#output-log", RichLog)
        lines = sget(state, "output", [])
        total = getattr(view, "output_total", len(lines))
        new = total - self.written
        if new <= 0:
            return
        kept = list(lines)
        fresh = kept[-min(new, len(kept)):] if kept else []
        for item in fresh:
            stream, line = (item if isinstance(item, (tuple, list)) and len(item) == 2 else ("stdout", str(item)))
            log.write(Text(str(line), style="red" if stream == "stderr" else ""))
        self.written = total
