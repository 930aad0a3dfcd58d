"""The Textual app driven headless with Pilot: replay of the recorded run fixture,
keys, tabs, Chinese advice, a live (fake) client with batching and controls, the
screenshot helper, and importing the app without torch."""
from __future__ import annotations

import io
import pathlib
import subprocess
import sys
import threading
import time

import pytest
from rich.console import Console

from segwatch.protocol import make_event, read_events
from segwatch.tui import SegwatchApp, screenshot
from segwatch.tui.app import TABS, ConfirmKill, HelpScreen
from segwatch.tui.messages import EventsArrived
from segwatch.tui.panels.base import Panel
from segwatch.tui.widgets import Plot

ROOT = pathlib.Path(__file__).resolve().parents[1]
RUN_DIR = ROOT / "tests" / "data" / "recorded_run"
SIZE = (100, 32)


def recorded() -> list[dict]:
    with open(RUN_DIR / "events.jsonl", "rb") as fh:
        return list(read_events(fh))


def screen_text(app) -> str:
    """The current screen as plain text (what a user would read)."""
    width, height = app.size
    console = Console(width=width, height=height, file=io.StringIO(), record=True,
                      force_terminal=True, color_system=None, legacy_windows=False)
    console.print(app.screen._compositor.render_update(full=True, screen_stack=app._background_screens))
    return console.export_text()


class FakeClient:
    """A RunClient stand-in: yields the given events (optionally held back by a gate)
    and records the control commands it receives."""

    def __init__(self, events, gate: threading.Event | None = None, hold_after: int | None = None):
        self._events = list(events)
        self.gate = gate
        self.hold_after = hold_after
        self.commands: list[str] = []

    def events(self, follow: bool = True):
        for i, ev in enumerate(self._events):
            if self.gate is not None and self.hold_after is not None and i == self.hold_after:
                self.gate.wait(10)
            yield ev

    def control(self, cmd: str) -> dict:
        self.commands.append(cmd)
        return {"ok": True, "cmd": cmd}


async def wait_for(pilot, cond, timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        await pilot.pause(0.05)
    return cond()


def panel_errors(app) -> list[str]:
    return [str(w.render()) for w in app.query(".panel-error")]


# --------------------------------------------------------------------- replay

async def test_replay_header_checklist_findings():
    app = SegwatchApp(events=recorded(), live=False)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        text = screen_text(app)
        assert "FINISHED (exit 0)" in text
        assert "step 120" in text
        assert "train.py" in text
        assert "elapsed 0:00:21" in text          # from the event times, not the clock
        assert "last action: RESUME by user" in text
        # the checklist: nine items, each with its state icon
        checklist = app.state.checklist
        assert len(checklist) == 9
        for item in checklist:
            assert item.title("en")[:20] in text
        assert "✗ predictions are diverse" in text
        # the findings list shows the seeded collapse
        assert "pred.collapse" in text
        assert "metric.single_class_signature" in text
        assert not panel_errors(app)


@pytest.mark.slow
async def test_overview_fits_80x24():
    app = SegwatchApp(events=recorded(), live=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        text = screen_text(app)
        lines = text.splitlines()
        assert len(lines) == 24
        assert "Checklist" in text and "Findings" in text
        assert "pred.collapse" in text and "metric.miou_stuck" in text  # every finding visible
        assert "mIoU is changing" in text                               # the last checklist item


@pytest.mark.slow
async def test_help_screen_opens_and_closes():
    app = SegwatchApp(events=recorded(), live=False)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        text = screen_text(app)
        for key in ("pause", "resume", "kill", "detach", "quit"):
            assert key in text
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.screen, HelpScreen)


async def test_number_keys_switch_tabs_and_render_each_panel():
    app = SegwatchApp(events=recorded(), live=False)
    async with app.run_test(size=SIZE) as pilot:
        from textual.widgets import TabbedContent

        tabs = app.query_one("#tabs", TabbedContent)
        for i, (pane, _, _) in enumerate(TABS):
            await pilot.press(str(i + 1))
            await pilot.pause()
            assert tabs.active == pane
            panel = app.query_one(f"#panel-{pane}", Panel)
            assert panel.seen_version == app.version  # drawn when it became visible
        assert not panel_errors(app)
        await pilot.press("5")
        await pilot.pause()
        text = screen_text(app)
        assert "collapse signature" in text
        assert "mIoU = p_c" in text
        assert "wall" in text


@pytest.mark.slow
async def test_hidden_panels_are_not_redrawn():
    app = SegwatchApp(events=recorded(), live=False)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        confusion = app.query_one("#panel-confusion", Panel)
        assert confusion.seen_version == -1       # never shown, never rendered
        app.ingest([make_event("output", t=1_700_000_100.0, stream="stdout", line="more")])
        await pilot.pause(0.25)
        assert confusion.seen_version == -1
        assert app.query_one("#panel-overview", Panel).seen_version == app.version


async def test_chinese_advice():
    events = recorded()
    app = SegwatchApp(events=events, lang="zh", live=False)
    async with app.run_test(size=(120, 60)) as pilot:
        await pilot.press("6")
        await pilot.pause()
        text = screen_text(app)
        advice = app.state.findings["pred.collapse"].advice("zh")
        assert advice[:8] in text
        assert "诊断结果" in text
        assert "建议" in text


@pytest.mark.slow
async def test_replay_controls_only_warn():
    app = SegwatchApp(events=recorded(), live=False)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("p")
        await pilot.press("k")
        await pilot.pause()
        assert not isinstance(app.screen, ConfirmKill)   # nothing to kill in a replay
        assert app.is_running


@pytest.mark.slow
async def test_minimal_stream_renders_every_panel():
    events = [make_event("status", t=1_700_000_000.0, status="running", pid=1)]
    app = SegwatchApp(events=events, live=False)
    async with app.run_test(size=(80, 24)) as pilot:
        for i in range(len(TABS)):
            await pilot.press(str(i + 1))
            await pilot.pause()
        assert not panel_errors(app)


@pytest.mark.slow
async def test_panel_error_is_contained(monkeypatch):
    from segwatch.tui.panels import data

    def broken(state, lang):
        raise RuntimeError("boom")

    monkeypatch.setattr(data, "labels_block", broken)
    app = SegwatchApp(events=recorded(), live=False)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("2")
        await pilot.pause()
        assert any("boom" in e for e in panel_errors(app))
        await pilot.press("1")
        await pilot.pause()
        assert app.is_running


# ---------------------------------------------------------------- live client

@pytest.mark.slow
async def test_live_client_batches_and_controls():
    events = recorded()
    gate = threading.Event()
    client = FakeClient(events, gate=gate, hold_after=200)
    batches: list[int] = []

    def hook(message):
        if isinstance(message, EventsArrived):
            batches.append(len(message.events))

    app = SegwatchApp(client=client, live=True)
    async with app.run_test(size=SIZE, message_hook=hook) as pilot:
        assert await wait_for(pilot, lambda: app.view.events >= 200)
        assert app.state.step < 120              # the rest is held back: still live
        # the screen follows within a refresh tick (~0.1 s)
        assert await wait_for(pilot, lambda: "RUNNING" in screen_text(app) or "PAUSED" in screen_text(app))
        gate.set()
        assert await wait_for(pilot, lambda: app.view.stream_ended)
        await pilot.pause(0.2)
        assert app.state.step == 120
        assert sum(batches) == len(events)
        assert len(batches) < len(events) / 10   # batched, not one message per event
        # controls go to the client, in a worker
        await pilot.press("p")
        assert await wait_for(pilot, lambda: client.commands == ["pause"])
        await pilot.press("r")
        assert await wait_for(pilot, lambda: client.commands == ["pause", "resume"])
        await pilot.press("k")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmKill)
        await pilot.press("n")                   # cancelled: nothing sent
        await pilot.pause(0.2)
        assert client.commands == ["pause", "resume"]
        await pilot.press("k")
        await pilot.pause()
        await pilot.press("y")
        assert await wait_for(pilot, lambda: client.commands == ["pause", "resume", "kill"])
        await pilot.press("q")                   # quit = detach: never a kill
        await pilot.pause()
    assert app.return_value == "detached"
    assert client.commands == ["pause", "resume", "kill"]


@pytest.mark.slow
async def test_live_action_is_shown_in_header_and_notified():
    t0 = 1_700_000_000.0
    events = [
        make_event("status", t=t0, status="running", pid=7),
        make_event("action", t=t0 + 1, kind="pause", finding="pred.collapse", step=57, by="policy"),
        make_event("status", t=t0 + 1.1, status="paused", pid=7),
    ]
    gate = threading.Event()
    app = SegwatchApp(client=FakeClient(events, gate=gate, hold_after=1), live=True)
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        assert await wait_for(pilot, lambda: app.caught_up)   # the action comes while we watch
        gate.set()
        assert await wait_for(pilot, lambda: app.view.stream_ended)
        assert await wait_for(pilot, lambda: "last action" in screen_text(app))
        text = screen_text(app)
        assert "PAUSED" in text
        assert "last action: PAUSE by policy" in text
        assert "pred.collapse @ step 57" in text
        assert any("pause by policy" in n.message for n in app._notifications)


@pytest.mark.slow
async def test_control_error_is_reported():
    class Failing(FakeClient):
        def control(self, cmd):
            raise ConnectionRefusedError("supervisor gone")

    app = SegwatchApp(client=Failing([]), live=True)
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await pilot.press("p")
        assert await wait_for(pilot, lambda: any("supervisor gone" in n.message for n in app._notifications))


@pytest.mark.slow
async def test_attach_puts_history_in_the_panels_without_toasts():
    """Attach to a finished run: its four findings are listed, none pops up as a toast."""
    app = SegwatchApp(client=FakeClient(recorded()), live=True)
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        assert await wait_for(pilot, lambda: app.view.stream_ended)
        await pilot.pause(0.2)
        assert len(app.state.findings) == 4
        assert "pred.collapse" in screen_text(app)
        assert app.toasted == []
        assert not any(n.title == "finding" for n in app._notifications)


@pytest.mark.slow
async def test_findings_new_while_watching_are_toasted_not_over_a_dialog():
    events = recorded()
    gate = threading.Event()
    # history: up to step 1's label mismatch; the collapse and the rest come live
    app = SegwatchApp(client=FakeClient(events, gate=gate, hold_after=60), live=True)
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        assert await wait_for(pilot, lambda: app.caught_up)
        assert "label.ignore_mismatch" in app.state.findings and app.toasted == []
        await pilot.press("question_mark")                  # a dialog is open: no toast over it
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        gate.set()
        assert await wait_for(pilot, lambda: app.view.stream_ended)
        await pilot.pause(0.2)
        assert "pred.collapse" in app.state.findings and app.toasted == []
        await pilot.press("escape")
        await pilot.pause()
    app = SegwatchApp(client=FakeClient(events, gate=(gate2 := threading.Event()), hold_after=60), live=True)
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        assert await wait_for(pilot, lambda: app.caught_up)
        gate2.set()
        assert await wait_for(pilot, lambda: app.view.stream_ended)
        await pilot.pause(0.2)
        assert "pred.collapse" in app.toasted and "label.ignore_mismatch" not in app.toasted
        # opening a dialog clears the toasts on screen
        assert any(n.title == "finding" for n in app._notifications)
        await pilot.press("question_mark")
        await pilot.pause()
        assert not list(app._notifications)


def _stale_events(sampled_until: int = 82, now: int = 640) -> list[dict]:
    """A live run whose probes stop at ``sampled_until`` while the loss read-back goes on."""
    t0 = 1_700_000_000.0
    evs = [make_event("status", t=t0, status="running", pid=7),
           make_event("hello", t=t0, pid=7, script="train.py", argv=["train.py"], config=None,
                      rank=0, world_size=1)]
    hist = [0] * 37
    for s in range(1, now + 1):
        t = t0 + s * 0.05
        if s <= sampled_until:
            ph = list(hist)
            for c in range(11):
                ph[c] = 40
            ph[0] = 200
            evs.append(make_event("preds", t=t, step=s, phase="train", shape=[2, 37, 16, 16], channels=37,
                                  hist=ph, gt_hist=None, unique=11, correct=None, valid=None,
                                  rank=0, world_size=1))
            evs.append(make_event("step", t=t, step=s, loss=0.4861, grad_norm=2.0, grad_nonfinite=0, lr=[0.003],
                                  layer_norms=[["head.weight", 1.0]], rank=0, world_size=1))
        elif s % 10 == 0:
            evs.append(make_event("step", t=t, step=s, loss=round(0.18 + s / 250, 4), grad_norm=None,
                                  lr=[round(0.003 * s / 82, 5)], sampled=False, rank=0, world_size=1))
    return evs


@pytest.mark.slow
async def test_a_value_that_stops_being_refreshed_is_shown_with_its_age():
    events = _stale_events(sampled_until=82, now=640)
    cut = next(i for i, e in enumerate(events) if e.get("step") == 90)
    gate = threading.Event()
    app = SegwatchApp(client=FakeClient(events, gate=gate, hold_after=cut), live=True)
    async with app.run_test(size=(120, 32)) as pilot:
        assert await wait_for(pilot, lambda: app.state.step >= 82)
        await pilot.pause(0.2)
        text = screen_text(app)
        assert "pred classes 11/37" in text and "@ step" not in text   # fresh: shown as current
        gate.set()
        assert await wait_for(pilot, lambda: app.view.stream_ended and app.state.step == 640)
        await pilot.pause(0.2)
        text = screen_text(app)
        line = next(ln for ln in text.splitlines() if "pred classes" in ln)
        assert "loss 2.74 " in line and "loss 2.74 @" not in line      # the read-back is current
        assert "grad 2 @ step 82" in line
        assert "pred classes 11/37  dominant" in line and "@ step 82" in line
        keys = app.query_one("#keys")
        spans = keys.render().spans                                  # the old values are dimmed
        plain = keys.render().plain
        at = plain.index("11/37")
        assert any(sp.start <= at < sp.end and "dim" in str(sp.style) for sp in spans)
        # the checklist quotes the same reading with its step
        assert "11 classes in the last training sample @ step 82" in text
        await pilot.press("4")                                       # Preds: the source and its step
        await pilot.pause(0.2)
        assert "training sample @ step 82" in screen_text(app)
        await pilot.press("3")
        await pilot.pause(0.2)
        text = screen_text(app)
        assert "Loss  last 2.74\n" in text or "Loss  last 2.74 " in text
        assert "Gradient norm (log scale)  last 2 @ step 82" in text
        assert "params with NaN/Inf grad 0 @ step 82" in text
        assert not panel_errors(app)


def _close(a: str, b: str, rel: float = 0.01) -> bool:
    x, y = float(a.replace(",", "")), float(b.replace(",", ""))
    return abs(x - y) <= rel * max(abs(x), abs(y), 1e-12)


def _healthy_stream() -> list[dict]:
    from test_state import healthy_run

    return healthy_run(steps=130, eval_every=100).events


@pytest.mark.parametrize("stream", ["recorded", "healthy"])
@pytest.mark.slow
async def test_header_checklist_and_panels_agree_at_every_frame(stream):
    """A run replayed frame by frame (the recorded collapse; a synthetic healthy run whose
    evaluation sees more classes than the training samples that follow it): at each frame
    the header's numbers, the checklist's evidence, the Loss panel and the Preds panel
    quote the same readings."""
    import re

    events = recorded() if stream == "recorded" else _healthy_stream()
    app = SegwatchApp(events=[], live=False)
    checked = {"preds_quoted": 0, "loss": 0, "grad": 0, "lr": 0, "preds_panel": 0}
    async with app.run_test(size=(120, 40)) as pilot:
        for start in range(0, len(events), 8):
            app.ingest(events[start:start + 8], notify=False)
            app.refresh_view(force=True)
            await pilot.pause()
            over = screen_text(app)
            key = next((ln for ln in over.splitlines() if ln.startswith(" loss ")), None)
            if key is None:
                continue
            m = re.search(r"loss (\S+)(?: @ step \d+)?  grad (\S+)(?: @ step \d+)?  lr (\S+)(?: @ step \d+)?"
                          r"  pred classes (\S+?)(?:/\d+)?(?:  dominant ([\d.]+)% (.+?))?(?: @ step \d+)?\s*$", key)
            assert m, key
            loss, grad, lr, k, share, dom = m.groups()
            rows = {ln.split("  ")[0].strip()[2:]: ln for ln in over.splitlines() if ln[:3] in (" ✓ ", " ! ", " ✗ ", " · ")}
            div = rows["predictions are diverse"]
            q = re.search(r"(\d+) classes (?:in the last training sample|predicted at evaluation)", div)
            if q:
                assert q.group(1) == k, (key, div)
                checked["preds_quoted"] += 1
            c = re.search(r"class \d+ \((.+?)\) is", div)
            if c and dom:
                assert c.group(1) == dom, (key, div)
            q = re.search(r"loss ([-\d.e+]+), (?:down|not falling)", rows["loss is falling"])
            if q and loss != "–":
                assert _close(q.group(1), loss), (key, rows["loss is falling"])
                checked["loss"] += 1
            q = re.search(r"grad norm ([-\d.e+]+) \(range", rows["gradient norm in range"])
            if q and grad != "–":
                assert _close(q.group(1), grad, 0.02), (key, rows["gradient norm in range"])
                checked["grad"] += 1
            q = re.search(r"lr ([-\d.e+]+) \(", rows["learning rate is sensible"])
            if q and lr != "–":
                assert _close(q.group(1), lr), (key, rows["learning rate is sensible"])
                checked["lr"] += 1
            # the Loss and Preds panels, drawn from the same state (hidden tabs: drawn directly)
            for pane in ("loss", "preds"):
                app.query_one(f"#panel-{pane}", Panel).update_panel(app.state, app.view)
            if loss != "–":
                assert app.query_one("#loss-plot", Plot)._note == f"last {loss}", key
            if grad != "–":
                assert app.query_one("#grad-plot", Plot)._note == f"last {grad}", key
            dominant = app.query_one("#pred-dominant").render().plain
            p = re.search(r"dominant class \d+ (.+?) at ([\d.]+)%   classes predicted (\d+)", dominant)
            if k != "–":
                assert p and (p.group(1), p.group(2), p.group(3)) == (dom, share, k), (key, dominant)
                checked["preds_panel"] += 1
    assert all(n >= 3 for n in checked.values()), checked


# ------------------------------------------------------------------ helpers

@pytest.mark.slow
def test_screenshot_helper(tmp_path):
    out = screenshot(recorded(), str(tmp_path / "shot.svg"), size=(100, 32))
    svg = pathlib.Path(out).read_text()
    assert svg.lstrip().startswith("<svg")
    assert "pred.collapse" in svg


@pytest.mark.slow
def test_tui_imports_without_torch():
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import segwatch.tui, segwatch.tui.app\n"
        "from segwatch.tui.panels import overview, data, loss, predictions, confusion, findings, output, header\n"
        "app = segwatch.tui.SegwatchApp(events=[], live=False)\n"
        "assert 'torch' not in sys.modules or sys.modules['torch'] is None\n"
        "print('ok')\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "ok"


def test_fixture_is_reproducible(tmp_path):
    sys.path.insert(0, str(ROOT / "tests" / "data"))
    try:
        import make_recorded_run
    finally:
        sys.path.pop(0)
    make_recorded_run.write(tmp_path)
    assert (tmp_path / "events.jsonl").read_bytes() == (RUN_DIR / "events.jsonl").read_bytes()
    assert (tmp_path / "meta.json").read_bytes() == (RUN_DIR / "meta.json").read_bytes()


# ------------------------------------------------------------ small pieces

def test_run_app_picks_the_source(monkeypatch):
    from segwatch.tui import app as app_mod

    seen = {}

    def fake_run(self, *a, **k):
        seen["client"], seen["events"], seen["live"], seen["lang"] = (
            self.client, len(self._sw_initial), self.live, self.lang)
        return "detached"

    monkeypatch.setattr(app_mod.SegwatchApp, "run", fake_run)
    assert app_mod.run_app(recorded(), lang="zh") == "detached"
    assert seen["client"] is None and seen["events"] > 100 and seen["live"] is False and seen["lang"] == "zh"
    client = FakeClient([])
    app_mod.run_app(client, lang=None)
    assert seen["client"] is client and seen["live"] is True and seen["lang"] == "en"


def test_plot_x_axis_is_the_step_not_the_sample_index():
    """20 dense samples then one every 32 steps up to 600: the dense start takes its share
    of the steps (3 of 90 columns), not half the plot; columns between samples hold the
    last value."""
    from segwatch.tui.widgets import plot_rows

    steps = list(range(1, 21)) + list(range(32, 601, 32))
    values = [10.0] * 20 + [1.0] * (len(steps) - 20)
    rows, lo, hi = plot_rows(values, width=90, height=2, steps=steps)
    top = rows[0].plain
    assert (lo, hi) == (1.0, 10.0)
    assert top[:3] == "███" and set(top[5:]) == {" "}       # high only over steps 1..20 (+ hold)
    bottom = rows[1].plain
    assert " " not in bottom                                  # no gaps between sparse samples
    by_index = plot_rows(values, width=90, height=2)[0][0].plain.rstrip()
    assert by_index.count("█") == 20 and len(by_index) <= 38  # by index the start took half of it


def test_plot_rows_marks_nonfinite_and_scales():
    from segwatch.tui.widgets import hbar, plot_rows, top_classes
    import numpy as np

    rows, lo, hi = plot_rows([1.0, 2.0, float("nan"), 4.0], width=10, height=3)
    assert (lo, hi) == (1.0, 4.0)
    assert rows[-1].plain[2] == "!"            # the NaN column
    assert rows[0].plain[3] == "█"             # the maximum fills the top row
    rows, lo, hi = plot_rows([1e-6, 1e-3, 1.0], width=3, height=2, log=True)
    assert abs(lo - 1e-6) < 1e-12 and abs(hi - 1.0) < 1e-9
    assert hbar(0.5, 4) == "██  " and hbar(1.0, 3) == "███" and hbar(float("nan"), 2) == "  "
    m = np.zeros((5, 5), dtype=np.int64)
    m[:, 3] = [10, 0, 5, 0, 1]
    assert top_classes(m, 2) == [0, 3]


@pytest.mark.slow
def test_screenshot_command_reproduces_docs_screenshot(tmp_path):
    from segwatch.tui.__main__ import main

    out = tmp_path / "shot.svg"
    assert main([str(RUN_DIR), str(out), "--title", "segwatch — recorded SUNRGBD collapse"]) == 0
    assert out.read_bytes() == (ROOT / "docs" / "screenshot.svg").read_bytes(), (
        "docs/screenshot.svg is stale: python -m segwatch.tui tests/data/recorded_run docs/screenshot.svg "
        "--title 'segwatch — recorded SUNRGBD collapse'")


async def test_refresh_timer_skips_a_screen_whose_widgets_are_gone():
    """While the app shuts down its refresh timer still ticks but the screen's widgets are
    being removed (CI, under load): the tick must draw nothing rather than fail the app."""
    t0 = 1_700_000_000.0
    app = SegwatchApp(client=FakeClient([make_event("status", t=t0, status="running", pid=7)]), live=True)
    async with app.run_test(size=SIZE) as pilot:
        assert await wait_for(pilot, lambda: app.view.stream_ended)
        await pilot.pause(0.3)
        await app.query_one("#status").remove()
        before = app.refreshes
        app._sw_dirty = True
        await pilot.pause(0.5)             # several ticks of the refresh timer
        assert app._sw_dirty and app.refreshes == before   # nothing was drawn, nothing raised
