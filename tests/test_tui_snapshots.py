"""SVG snapshots of every panel on the recorded run fixture (pytest-textual-snapshot).

The fixture has fixed timestamps and the replay freezes elapsed time and it/s to the
event times, so the screens are reproducible. Regenerate after an intended change with
``python -m pytest tests/test_tui_snapshots.py --snapshot-update`` and review the SVGs.
"""
from __future__ import annotations

import pathlib
import threading
import time

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
@pytest.mark.slow
def test_panel_snapshot(snap_compare, key, name):
    assert snap_compare(replay(), terminal_size=SIZE, press=[key])


@pytest.mark.slow
def test_overview_80x24(snap_compare):
    assert snap_compare(replay(), terminal_size=(80, 24))


@pytest.mark.slow
def test_confusion_80x24_top_k(snap_compare):
    """37 classes do not fit 80 columns: the heatmap shows the top-k and says so."""
    assert snap_compare(replay(), terminal_size=(80, 24), press=["5"])


@pytest.mark.slow
def test_findings_chinese(snap_compare):
    assert snap_compare(replay(lang="zh"), terminal_size=SIZE, press=["6"])


@pytest.mark.slow
def test_help_screen(snap_compare):
    assert snap_compare(replay(), terminal_size=SIZE, press=["question_mark"])


class _RecordedClient:
    """A finished run behind a client, so that k opens the confirmation."""

    def events(self, follow=True):
        yield from recorded()

    def control(self, cmd):
        return {"ok": True, "cmd": cmd}


@pytest.mark.slow
def test_kill_confirmation(snap_compare):
    async def settle(pilot):
        for _ in range(50):
            if pilot.app.view.stream_ended:
                break
            await pilot.pause(0.05)
        await pilot.pause(0.2)

    assert snap_compare(replay(client=_RecordedClient()), terminal_size=SIZE,
                        run_before=settle, press=["k"])


@pytest.mark.slow
def test_overview_wide(snap_compare):
    """A large terminal: checklist and findings (with evidence and advice) side by side."""
    assert snap_compare(replay(), terminal_size=(170, 40))


class _GatedClient(_RecordedClient):
    """The recorded run as an attach: the first ``hold_after`` events are its history, the
    rest (every finding, the actions) arrive once ``gate`` is set, as a burst."""

    def __init__(self, hold_after: int) -> None:
        self.gate = threading.Event()
        self.hold_after = hold_after

    def events(self, follow=True):
        for i, ev in enumerate(recorded()):
            if i == self.hold_after:
                self.gate.wait(20)
            yield ev


@pytest.mark.slow
def test_kill_dialog_stays_readable_during_a_burst_of_findings(snap_compare):
    """Four findings and two actions arrive while the kill dialog is open: no toast covers it."""
    client = _GatedClient(hold_after=6)
    app = SegwatchApp(client=client, events=None, live=True)

    async def burst_under_dialog(pilot):
        end = time.monotonic() + 20
        while not pilot.app.caught_up and time.monotonic() < end:
            await pilot.pause(0.05)
        await pilot.press("k")
        await pilot.pause(0.1)
        client.gate.set()
        while not pilot.app.view.stream_ended and time.monotonic() < end:
            await pilot.pause(0.05)
        await pilot.pause(0.3)
        assert len(pilot.app.state.findings) == 4

    assert snap_compare(app, terminal_size=SIZE, run_before=burst_under_dialog)
