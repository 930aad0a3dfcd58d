"""The Textual app: a view of RunState, fed by batches of events.

Two sources:
- ``events``: a list of events (a replay, a snapshot test), ingested once on mount;
- ``client``: a live ``RunClient``, read in a worker thread that posts ``EventsArrived``
  batches (at most a few in flight, so a slow screen slows the reader, not the memory).

Every batch goes into RunState at once; the screen is refreshed by a 10 Hz timer, and
only the header and the visible panel are redrawn, and only when the state changed.
The app never kills a run by itself: ``q`` and ``d`` detach, ``k`` asks first.

Toasts are for what happens while you watch: what the run had stored before the reader
caught up (``attach`` to a run with a history) goes to the panels only, and no toast is
shown over a dialog (they are cleared when one opens and held back while it is open).
"""
from __future__ import annotations

import threading
import time
from collections import deque
from functools import partial
from typing import Any, Iterable

from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Footer, Static, TabbedContent, TabPane
from textual.worker import get_current_worker

from segwatch.core.state import RunState
from segwatch.tui.messages import CaughtUp, ControlDone, EventsArrived, StreamEnded
from segwatch.tui.panels.base import Panel, sget
from segwatch.tui.panels.confusion import ConfusionPanel
from segwatch.tui.panels.data import DataPanel
from segwatch.tui.panels.findings import FindingsPanel
from segwatch.tui.panels.gpu import GpuPanel
from segwatch.tui.panels.header import StatusHeader
from segwatch.tui.panels.loss import LossPanel
from segwatch.tui.panels.output import OutputPanel
from segwatch.tui.panels.overview import OverviewPanel
from segwatch.tui.panels.predictions import PredictionsPanel
from segwatch.tui.panels.ranks import RanksPanel, tab_label as ranks_tab_label
from segwatch.tui.text import ui
from segwatch.tui.view import TERMINAL, ViewInfo

#: (pane id, panel class, label key); number keys 1..8 select them in this order.
TABS: list[tuple[str, type[Panel], str]] = [
    ("overview", OverviewPanel, "tab.overview"),
    ("data", DataPanel, "tab.data"),
    ("loss", LossPanel, "tab.loss"),
    ("preds", PredictionsPanel, "tab.preds"),
    ("confusion", ConfusionPanel, "tab.confusion"),
    ("findings", FindingsPanel, "tab.findings"),
    ("output", OutputPanel, "tab.output"),
    ("gpu", GpuPanel, "tab.gpu"),
]

REFRESH_INTERVAL = 0.1   # at most ~10 redraws per second
BATCH_MAX = 2000         # events per EventsArrived message
BATCH_WAIT = 0.05        # seconds the reader waits to fill a batch
MAX_IN_FLIGHT = 2        # batches posted and not yet ingested
CAUGHT_UP_IDLE = 0.3     # seconds without a new event after which the stored history is read

KEYS_EN = [
    ("p", "pause the training (SIGSTOP to its process group)"),
    ("r", "resume it"),
    ("k", "kill it (asks for confirmation)"),
    ("d", "detach: close the app, the training goes on"),
    ("q", "quit the app (same as detach; never kills the run)"),
    ("1..8", "tabs: overview, data, loss/grad, predictions, confusion, findings, output, GPU"),
    ("?", "this help"),
]
KEYS_ZH = [
    ("p", "暂停训练（向进程组发送 SIGSTOP）"),
    ("r", "继续训练"),
    ("k", "终止训练（需确认）"),
    ("d", "分离：关闭界面，训练继续"),
    ("q", "退出界面（同分离，不会终止训练）"),
    ("1..8", "标签页：总览、数据、损失/梯度、预测、混淆矩阵、诊断、输出、GPU"),
    ("?", "本帮助"),
]


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,question_mark,enter", "close", "Close")]

    def __init__(self, lang: str = "en", live: bool = True) -> None:
        super().__init__()
        self.lang = lang
        self.live = live

    def compose(self) -> ComposeResult:
        text = Text("segwatch — keys" if self.lang != "zh" else "segwatch — 按键", style="bold")
        for key, desc in (KEYS_ZH if self.lang == "zh" else KEYS_EN):
            text.append("\n")
            text.append(f"{key:>5}  ", style="bold cyan")
            text.append(desc)
        if not self.live:
            text.append("\n\n")
            text.append("replay: p / r / k need a live run" if self.lang != "zh" else "回放模式：p / r / k 需要正在运行的训练",
                        style="dim")
        text.append("\n\n")
        text.append("esc / ? to close" if self.lang != "zh" else "按 esc / ? 关闭", style="dim")
        with Vertical(id="help-box"):
            yield Static(text, id="help-text")

    def action_close(self) -> None:
        self.dismiss(None)


class ConfirmKill(ModalScreen[bool]):
    BINDINGS = [Binding("y", "answer(True)", "Kill"), Binding("n,escape", "answer(False)", "Cancel")]

    def __init__(self, lang: str = "en") -> None:
        super().__init__()
        self.lang = lang

    def compose(self) -> ComposeResult:
        if self.lang == "zh":
            msg = "终止训练进程？\n整个进程组会收到 SIGTERM，随后 SIGKILL。"
            yes, no = "终止 (y)", "取消 (n)"
        else:
            msg = "Kill the training run?\nIts whole process group gets SIGTERM, then SIGKILL."
            yes, no = "Kill (y)", "Cancel (n)"
        with Vertical(id="kill-box"):
            yield Static(msg, id="kill-text")
            with Horizontal(id="kill-buttons"):
                yield Button(yes, variant="error", id="kill-yes")
                yield Button(no, variant="primary", id="kill-no")

    def on_mount(self) -> None:
        self.query_one("#kill-no", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "kill-yes")

    def action_answer(self, value: bool) -> None:
        self.dismiss(value)


class SegwatchApp(App):
    """segwatch's live view. ``client`` (a RunClient) for a live or attached run,
    ``events`` (a list) for a replay; ``live=False`` freezes clocks to the event times."""

    CSS_PATH = "app.tcss"
    TITLE = "segwatch"
    ENABLE_COMMAND_PALETTE = False
    BINDINGS = [
        Binding("p", "control('pause')", "Pause"),
        Binding("r", "control('resume')", "Resume"),
        Binding("k", "kill", "Kill"),
        Binding("d", "detach", "Detach"),
        Binding("q", "detach", "Quit"),
        Binding("question_mark", "help", "Help"),
    ] + [
        Binding(str(i + 1), f"tab('{pane}')", ui(label), show=False) for i, (pane, _, label) in enumerate(TABS)
    ] + [Binding(str(len(TABS) + 1), "tab('ranks')", "Ranks", show=False)]

    def __init__(
        self,
        client: Any = None,
        events: Iterable[dict] | None = None,
        lang: str = "en",
        live: bool = True,
        title: str | None = None,
        config: Any = None,
        state: Any = None,
    ) -> None:
        super().__init__()
        self.client = client
        self.lang = "zh" if lang == "zh" else "en"
        self.live = bool(live)
        self.run_title = title
        if title:
            self.title = title
        # ``state``: a RunState-like object of the caller's (a FleetState for several nodes)
        self.state = state if state is not None else RunState(config=config, lang=self.lang)
        self.view = ViewInfo()
        self.version = 0
        self._sw_dirty = True
        self._sw_initial = list(events) if events is not None else []
        self._sw_last_header = 0.0
        self._sw_header: StatusHeader | None = None   # found once at mount, drawn at every tick
        self._sw_in_flight = threading.Semaphore(MAX_IN_FLIGHT)
        self._sw_stop = threading.Event()
        self.ingest_errors = 0
        self.refreshes = 0
        self.caught_up = False          # the reader has read the run's stored history
        self.toasted: list[str] = []    # what was toasted: finding ids, "action:<kind>"
        self._sw_ranks_added = False    # the Ranks tab, added once the run turns out distributed

    # ------------------------------------------------------------------ layout
    def compose(self) -> ComposeResult:
        yield StatusHeader(id="status")
        with TabbedContent(initial="overview", id="tabs"):
            for i, (pane, cls, label) in enumerate(TABS):
                with TabPane(f"{i + 1} {ui(label, self.lang)}", id=pane):
                    yield cls(lang=self.lang, id=f"panel-{pane}")
            if self._wants_ranks_tab():
                yield self._ranks_pane()
        yield Footer()

    def _wants_ranks_tab(self) -> bool:
        """A distributed run (or a fleet of nodes) gets the Ranks tab; a single process does not."""
        return bool(getattr(self.state, "nodes", None)) or int(sget(self.state, "world_size", 1) or 1) > 1

    def _ranks_pane(self) -> TabPane:
        return TabPane(f"{len(TABS) + 1} {ranks_tab_label(self.lang)}",
                       RanksPanel(lang=self.lang, id="panel-ranks"), id="ranks")

    def on_mount(self) -> None:
        self._sw_header = self.query_one("#status", StatusHeader)
        if self._sw_initial:
            self.ingest(self._sw_initial, notify=False)
            self._sw_initial = []
        self.refresh_view(force=True)
        self.set_interval(REFRESH_INTERVAL, self._tick)
        if self.client is not None:
            self.run_worker(self._read_events, thread=True, group="reader", exclusive=True,
                            exit_on_error=False, name="segwatch-reader")

    def on_unmount(self) -> None:
        self._sw_stop.set()

    # --------------------------------------------------------------- ingestion
    def ingest(self, events: list[dict], notify: bool = True) -> list:
        """Feed a batch into RunState (and the header's bookkeeping); mark the view dirty."""
        observe = self.view.observe
        for ev in events:
            observe(ev)
        try:
            new = self.state.ingest_many(events) or []
        except Exception:
            new = []
            for ev in events:
                try:
                    new.extend(self.state.ingest(ev) or [])
                except Exception:
                    self.ingest_errors += 1
        self.version += 1
        self._sw_dirty = True
        if notify and self.live:
            self._announce(events, new)
        return new

    def _announce(self, events: list[dict], new_findings: list) -> None:
        if isinstance(self.screen, ModalScreen):
            return  # never over a dialog; the findings are in the panels
        shown = 0
        for ev in events:
            if ev.get("type") == "action" and shown < 3:
                shown += 1
                kind = str(ev.get("kind", "?"))
                by = ev.get("by") or "?"
                what = f" ({ev['finding']} @ step {ev.get('step')})" if ev.get("finding") else ""
                self.toasted.append(f"action:{kind}")
                self.notify(f"{kind} by {by}{what}", title="action",
                            severity="error" if kind == "kill" else "warning", timeout=8)
        for f in new_findings[:3]:
            sev = getattr(f, "severity", None) or (f.get("severity") if isinstance(f, dict) else None)
            fid = getattr(f, "id", None) or (f.get("id") if isinstance(f, dict) else "?")
            if sev in ("error", "warning"):
                self.toasted.append(str(fid))
                self.notify(str(fid), title="finding", severity="error" if sev == "error" else "warning",
                            timeout=6)

    def push_screen(self, screen, *args, **kwargs):
        if isinstance(screen, ModalScreen):
            self.clear_notifications()  # a dialog is read whole, with no toast over it
        return super().push_screen(screen, *args, **kwargs)

    def on_events_arrived(self, message: EventsArrived) -> None:
        try:
            self.ingest(message.events, notify=not message.history)
        finally:
            self._sw_in_flight.release()
        # under a flood of batches the timer's turn comes late: keep ~10 redraws/s anyway
        if time.monotonic() - self._sw_last_header >= REFRESH_INTERVAL:
            self.refresh_view()

    def on_caught_up(self, message: CaughtUp) -> None:
        self.caught_up = True

    def on_stream_ended(self, message: StreamEnded) -> None:
        self.view.stream_ended = True
        self._sw_dirty = True
        if message.error:
            self.notify(f"event stream failed: {message.error}", severity="error", timeout=10)
        elif self.live and not isinstance(self.screen, ModalScreen):
            self.notify("the run's event stream ended" if self.lang != "zh" else "事件流已结束", timeout=5)

    def _read_events(self) -> None:
        """Worker thread: read the client's events and post them in batches.

        A pump thread drains the client's (blocking) generator into a deque; this loop
        takes what has accumulated every ``BATCH_WAIT`` seconds (at most ``BATCH_MAX`` at a
        time) and posts it, with at most ``MAX_IN_FLIGHT`` batches waiting for the app.
        Batches read before the source first went quiet for ``CAUGHT_UP_IDLE`` seconds are
        the run's history (``EventsArrived.history``): they are not toasted.
        """
        worker = get_current_worker()
        buf: deque = deque()
        done = threading.Event()
        failure: list[str] = []
        stop = self._sw_stop
        high = 4 * BATCH_MAX

        def pump() -> None:
            try:
                for ev in self.client.events(follow=self.live):
                    buf.append(ev)
                    if len(buf) > high:  # the app is behind: wait (bounded memory)
                        while len(buf) > BATCH_MAX and not stop.is_set():
                            time.sleep(0.005)
                    if stop.is_set():
                        return
            except Exception as exc:  # the stream failing is shown, never fatal
                failure.append(f"{type(exc).__name__}: {exc}")
            finally:
                done.set()

        threading.Thread(target=pump, name="segwatch-pump", daemon=True).start()
        caught_up = False
        idle_since: float | None = None
        while not worker.is_cancelled and not stop.is_set():
            finished = done.is_set()  # read before draining: nothing is appended after it
            if not buf:
                if finished:
                    self.post_message(StreamEnded(failure[0] if failure else None))
                    return
                now = time.monotonic()
                if idle_since is None:
                    idle_since = now
                elif not caught_up and now - idle_since >= CAUGHT_UP_IDLE:
                    caught_up = True
                    self.post_message(CaughtUp())
                time.sleep(BATCH_WAIT / 2)
                continue
            idle_since = None
            if len(buf) < BATCH_MAX and not finished:
                time.sleep(BATCH_WAIT)  # let a batch accumulate
            n = min(len(buf), BATCH_MAX)
            batch = [buf.popleft() for _ in range(n)]
            while not self._sw_in_flight.acquire(timeout=0.2):
                if stop.is_set() or worker.is_cancelled:
                    return
            self.post_message(EventsArrived(batch, history=not caught_up))

    # ----------------------------------------------------------------- refresh
    def _tick(self) -> None:
        # The interval timer belongs to the app and outlives the screen's widgets while
        # the app shuts down (seen under load in CI): draw nothing once they are going.
        if getattr(self, "_exit", False) or not self._widgets_attached():
            return
        if self._sw_dirty:
            self.refresh_view()
        elif self.live and not self.view.stream_ended and time.monotonic() - self._sw_last_header >= 1.0:
            status = sget(self.state, "status") or self.view.status
            if status not in TERMINAL:
                self._update_header()  # the elapsed clock

    def _widgets_attached(self) -> bool:
        return self._sw_header is not None and self._sw_header.is_attached

    def _update_header(self) -> None:
        self._sw_last_header = time.monotonic()
        self._sw_header.show(self.state, self.view, self.live, self.run_title)

    def refresh_view(self, force: bool = False) -> None:
        """Redraw the header and the visible panel if the state changed since they last drew."""
        self._sw_dirty = False
        self.refreshes += 1
        if not self._sw_ranks_added and self._wants_ranks_tab():
            self._sw_ranks_added = True
            if not self.query("#panel-ranks"):
                self.query_one("#tabs", TabbedContent).add_pane(self._ranks_pane())
        self._update_header()
        self._refresh_active(force=force)

    def _refresh_active(self, force: bool = False) -> None:
        try:
            active = self.query_one("#tabs", TabbedContent).active
        except Exception:
            return
        if not active:
            return
        panel = self.query_one(f"#panel-{active}", Panel)
        if force or panel.seen_version != self.version:
            panel.update_panel(self.state, self.view)
            panel.seen_version = self.version

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        self._refresh_active()

    # ------------------------------------------------------------------ keys
    def action_tab(self, pane: str) -> None:
        if self.query(f"#panel-{pane}"):     # the Ranks tab exists only for distributed runs
            self.query_one("#tabs", TabbedContent).active = pane

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen(self.lang, live=self.client is not None))

    def action_detach(self) -> None:
        """``d`` and ``q``: leave the app; the training (if any) goes on."""
        self._sw_stop.set()
        self.exit(result="detached")

    def action_kill(self) -> None:
        if not self._can_control("kill"):
            return

        def answered(confirmed: bool | None) -> None:
            if confirmed:
                self.action_control("kill")

        self.push_screen(ConfirmKill(self.lang), callback=answered)

    def _can_control(self, cmd: str) -> bool:
        if self.client is None or not hasattr(self.client, "control"):
            msg = (f"{cmd}: not attached to a live run (this is a replay)" if self.lang != "zh"
                   else f"{cmd}：未连接到正在运行的训练（回放模式）")
            self.notify(msg, severity="warning", timeout=4)
            return False
        return True

    def action_control(self, cmd: str) -> None:
        if not self._can_control(cmd):
            return
        self.notify(f"{cmd} …", timeout=2)
        self.run_worker(partial(self._control_worker, cmd), thread=True, group="control",
                        exit_on_error=False, name=f"control-{cmd}")

    def _control_worker(self, cmd: str) -> None:
        try:
            ack = self.client.control(cmd)
            if not isinstance(ack, dict):
                ack = {"ok": bool(ack), "cmd": cmd}
        except Exception as exc:
            ack = {"ok": False, "cmd": cmd, "error": f"{type(exc).__name__}: {exc}"}
        self.post_message(ControlDone(cmd, ack))

    def on_control_done(self, message: ControlDone) -> None:
        ack = message.ack
        if ack.get("ok"):
            self.notify(f"{message.cmd}: ok", severity="information", timeout=4)
        else:
            self.notify(f"{message.cmd} failed: {ack.get('error') or 'no answer'}", severity="error", timeout=8)


def _as_client(source: Any) -> Any:
    """A RunClient for a run directory / address; other objects are used as they are."""
    import os

    if isinstance(source, (str, os.PathLike)):
        from segwatch.supervisor.client import RunClient

        return RunClient(source)
    return source


def run_app(source: Any, lang: str = "en", live: bool | None = None, title: str | None = None,
            config: Any = None, state: Any = None) -> Any:
    """Run the app in the terminal until the user detaches.

    ``source``: a list of events (replay; clocks frozen), a ``RunClient``-like object with
    ``events(follow)`` and ``control(cmd)``, or a run directory / address (wrapped in a
    RunClient). Returns ``"detached"`` when the user left with d/q.
    """
    if isinstance(source, (list, tuple)):
        app = SegwatchApp(events=list(source), lang=lang, live=False if live is None else live,
                          title=title, config=config, state=state)
    else:
        app = SegwatchApp(client=_as_client(source), lang=lang, live=True if live is None else live,
                          title=title, config=config, state=state)
    return app.run()
