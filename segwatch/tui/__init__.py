"""segwatch's terminal app (Textual). Imports textual, core, protocol and the
supervisor's client only: it runs on a machine without torch."""
from __future__ import annotations

from typing import Iterable

from segwatch.tui.app import SegwatchApp, run_app

__all__ = ["SegwatchApp", "run_app", "screenshot"]


def screenshot(events: Iterable[dict], path_svg: str, size: tuple[int, int] = (100, 32),
               lang: str = "en", tab: str | None = None, title: str | None = None) -> str:
    """Save an SVG screenshot of the app on a recorded run (headless); returns the path.

    ``tab``: a pane id (overview, data, loss, preds, confusion, findings, output) to show
    instead of the overview.
    """
    import asyncio
    import threading

    events = list(events)
    shot: dict = {}

    async def take() -> None:
        app = SegwatchApp(events=events, lang=lang, live=False, title=title)
        async with app.run_test(size=size) as pilot:
            if tab:
                app.action_tab(tab)
            await pilot.pause()
            await pilot.pause()
            shot["svg"] = app.export_screenshot(title=title or "segwatch")

    try:
        asyncio.get_running_loop()
        running = True
    except RuntimeError:
        running = False
    if running:  # called from async code: run in a thread with its own loop
        worker = threading.Thread(target=lambda: asyncio.run(take()))
        worker.start()
        worker.join()
    else:
        asyncio.run(take())
    with open(path_svg, "w", encoding="utf-8") as fh:
        fh.write(shot["svg"])
    return path_svg
