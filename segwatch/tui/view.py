"""View-side bookkeeping the header needs beyond RunState: timestamps of the stream,
the last ``proc`` sample, the training loop's length, the last action.

It watches the same events that go into RunState (cheap: a few dict lookups per
event) so the app keeps working whatever RunState chooses to keep.
"""
from __future__ import annotations

from typing import Any

TERMINAL = ("finished", "killed", "failed", "lost")


class ViewInfo:
    __slots__ = ("first_t", "last_t", "proc", "loop_length", "loop_index", "loop_epoch",
                 "last_step", "output_total", "last_action", "script", "status", "exit_code",
                 "events", "status_t", "run_t0", "stream_ended")

    def __init__(self) -> None:
        self.first_t: float | None = None
        self.last_t: float | None = None
        self.proc: dict | None = None
        self.loop_length: int | None = None
        self.loop_index: int | None = None
        self.loop_epoch: int | None = None
        self.last_step: dict | None = None
        self.output_total = 0
        self.last_action: dict | None = None
        self.script: str | None = None
        self.status: str | None = None
        self.exit_code: Any = None
        self.status_t: float | None = None
        self.run_t0: float | None = None
        self.events = 0
        self.stream_ended = False

    def observe(self, ev: dict) -> None:
        self.events += 1
        t = ev.get("t")
        if isinstance(t, (int, float)):
            if self.first_t is None:
                self.first_t = t
            if self.last_t is None or t > self.last_t:
                self.last_t = t
        typ = ev.get("type")
        if typ == "step":
            self.last_step = ev
        elif typ == "batch":
            if ev.get("phase") == "train":
                length = ev.get("length")
                if isinstance(length, int) and length > 0:
                    self.loop_length = length
                idx = ev.get("index")
                if isinstance(idx, int):
                    self.loop_index = idx
                ep = ev.get("epoch")
                if isinstance(ep, int):
                    self.loop_epoch = ep
        elif typ == "output":
            self.output_total += 1
        elif typ == "proc":
            self.proc = ev
        elif typ == "action":
            self.last_action = ev
        elif typ == "status":
            self.status = ev.get("status")
            self.exit_code = ev.get("exit_code")
            self.status_t = t
            if self.status in ("starting", "running") and self.run_t0 is None:
                self.run_t0 = t
        elif typ == "hello":
            script = ev.get("script")
            if script:
                self.script = script
            if self.run_t0 is None:
                self.run_t0 = t
