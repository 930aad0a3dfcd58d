"""SVG snapshots of every panel on the recorded run fixture (pytest-textual-snapshot).

The fixture has fixed timestamps and the replay freezes elapsed time and it/s to the
event times, so the screens are reproducible. Regenerate after an intended change with
``python -m pytest tests/test_tui_snapshots.py --snapshot-update`` and review the SVGs.
"""
from __future__ import annotations

import pathlib

import pytest

from segwatch.protocol import read_events
from segwatch.tui import SegwatchApp

RUN_DIR = pathlib.Path(__file__).resolve().parent / "data" / "recorded_run"
SIZE = (100, 32)


def recorded() -> list[dict]:
    with open(RUN_DIR / "events.jsonl", "rb") as fh:
        return list(read_events(fh))


def replay(lang: str = "en", client=None) -> SegwatchApp:
    if client is not None:
        app = SegwatchApp(client=client, events=None, lang=lang, live=False)
        return app
    return SegwatchApp(events=recorded(), lang=lang, live=False)


@pytest.mark.parametrize(
    "key,name",
    [("1", "overview"), ("2", "data"), ("3", "loss"), ("4", "predictions"),
     ("5", "confusion"), ("6", "findings"), ("7", "output")],
)
def test_panel_snapshot(snap_compare, key, name):
    assert snap_compare(replay(), terminal_size=SIZE, press=[key])


def test_overview_80x24(snap_compare):
    assert snap_compare(replay(), terminal_size=(80, 24))


def test_confusion_80x24_top_k(snap_compare):
    """37 classes do not fit 80 columns: the heatmap shows the top-k and says so."""
    assert snap_compare(replay(), terminal_size=(80, 24), press=["5"])


def test_findings_chinese(snap_compare):
    assert snap_compare(replay(lang="zh"), terminal_size=SIZE, press=["6"])


def test_help_screen(snap_compare):
    assert snap_compare(replay(), terminal_size=SIZE, press=["question_mark"])


class _RecordedClient:
    """A finished run behind a client, so that k opens the confirmation."""

    def events(self, follow=True):
        yield from recorded()

    def control(self, cmd):
        return {"ok": True, "cmd": cmd}


def test_kill_confirmation(snap_compare):
    async def settle(pilot):
        for _ in range(50):
            if pilot.app.view.stream_ended:
                break
            await pilot.pause(0.05)
        await pilot.pause(0.2)

    assert snap_compare(replay(client=_RecordedClient()), terminal_size=SIZE,
                        run_before=settle, press=["k"])


def test_overview_wide(snap_compare):
    """A large terminal: checklist and findings (with evidence and advice) side by side."""
    assert snap_compare(replay(), terminal_size=(170, 40))
