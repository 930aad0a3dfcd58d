"""The base of every panel: a scrollable container that renders from RunState on demand.

The app calls ``update_panel(state, view)`` only when the panel is visible and the state
changed since its last render; a panel that raises shows the error instead of taking
the app down.
"""
from __future__ import annotations

import traceback
from typing import Any

from rich.text import Text
from textual.containers import VerticalScroll
from textual.widgets import Static


def sget(state: Any, name: str, default: Any = None) -> Any:
    """An attribute of RunState, or ``default`` when this RunState does not have it."""
    try:
        value = getattr(state, name, default)
    except Exception:  # a property of RunState that failed: show the rest
        return default
    return default if value is None else value


def series_arrays(series: Any):
    """(steps, values) of a core Series over the whole run (its thinned span: a plot goes
    from the run's start to now), or of a list of pairs, as lists."""
    if series is None:
        return [], []
    try:
        steps, values = series.span()
        return list(steps), list(values)
    except AttributeError:
        pass
    try:
        return list(series.steps()), list(series.values())
    except AttributeError:
        pairs = list(series)
        return [p[0] for p in pairs], [p[1] for p in pairs]


def reading(state: Any, name: str) -> Any:
    """RunState's reading ``name`` (``.value``, ``.step``, ``.probe``), or None."""
    readings = sget(state, "readings")
    return readings.get(name) if isinstance(readings, dict) else None


def is_old(state: Any, r: Any) -> bool:
    """Whether the reading ``r`` must be shown with its step rather than as current."""
    if r is None:
        return False
    try:
        return bool(state.is_old(r))
    except Exception:
        return False


def age_note(state: Any, r: Any, lang: str = "en") -> Text:
    """`` @ step 82`` (dimmed) after a value whose reading is old, else nothing."""
    if not is_old(state, r):
        return Text("")
    return Text(f" @ step {r.step:,}" if lang != "zh" else f" @第 {r.step:,} 步", style="dim italic")


def value_style(state: Any, r: Any, style: str = "") -> str:
    """An old value is dimmed, whatever its own style would be."""
    return "dim" if is_old(state, r) else style


def series_last(series: Any):
    if series is None:
        return None
    try:
        item = series.last()
    except AttributeError:
        item = list(series)[-1] if series else None
    if item is None:
        return None
    return item[1] if isinstance(item, tuple) else item


class Panel(VerticalScroll):
    """One tab's content. Subclasses implement ``render_state``."""

    DEFAULT_CSS = """
    Panel { height: 1fr; padding: 0 1; }
    Panel > .panel-error { color: $error; }
    """

    def __init__(self, lang: str = "en", **kwargs) -> None:
        super().__init__(**kwargs)
        self.lang = lang
        self.seen_version = -1
        self._error: Static | None = None
        self._last: tuple[Any, Any] | None = None

    def rerender(self) -> None:
        """Draw again from the last state seen (after a resize that changes the layout)."""
        if self._last is not None:
            self.update_panel(*self._last)

    def update_panel(self, state: Any, view: Any) -> None:
        self._last = (state, view)
        try:
            self.render_state(state, view)
            if self._error is not None:
                self._error.remove()
                self._error = None
        except Exception as exc:  # a viewer bug must not kill the app
            msg = Text(f"panel error: {type(exc).__name__}: {exc}\n", style="bold red")
            msg.append(traceback.format_exc(limit=3), style="dim")
            if self._error is None:
                self._error = Static(msg, classes="panel-error")
                self.mount(self._error, before=0)
            else:
                self._error.update(msg)

    def render_state(self, state: Any, view: Any) -> None:  # pragma: no cover - abstract
        raise NotImplementedError
