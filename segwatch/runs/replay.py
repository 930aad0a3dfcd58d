"""Rebuild a run's state from its directory: ``Replayed`` and ``load_report``."""
from __future__ import annotations

import os

from segwatch.protocol import LineDecoder

from . import corelink
from .report import finalize_report
from .store import FINAL_STATUSES, RunDir, effective_status


class Replayed:
    """A run directory read back: ``state`` (a RunState fed every stored event), ``meta``,
    ``events`` (count), ``invalid`` (lines that did not decode), ``status``.

    ``keep_events``: also keep the decoded events (``event_list``). ``ingest=False`` skips
    the state (it stays empty): for a caller that feeds the events to a state of its own,
    such as the app, which would otherwise pay for every event twice."""

    def __init__(self, run_dir: str | os.PathLike, lang: str | None = None, keep_events: bool = False,
                 ingest: bool = True) -> None:
        self.store = RunDir(run_dir)
        self.meta = self.store.read_meta()
        self.lang = lang or self.meta.get("lang") or "en"
        config = corelink.config_from_dict(self.meta.get("config_resolved"))
        self.state = corelink.SafeState(config, self.lang)
        self.actions: list[dict] = []
        self.event_list: list[dict] | None = [] if keep_events else None
        counter = LineDecoder()
        n = 0
        keep = self.event_list.append if self.event_list is not None else None
        feed = self.state.ingest if ingest else None
        actions = self.actions
        for ev in self.store.events(counter):
            n += 1
            if keep is not None:
                keep(ev)
            if ev.get("type") == "action":
                actions.append(ev)
            if feed is not None:
                feed(ev)
        self.events = n
        self.invalid = counter.invalid
        self.status = effective_status(self.meta)

    @property
    def run_dir(self) -> str:
        return str(self.store.path)

    def report(self) -> dict:
        exit_code = self.meta.get("exit_code")
        rep = self.state.report(exit_code)
        finalize_report(rep, exit_code=exit_code, status=self.status, script=self.meta.get("script"),
                        run_dir=self.run_dir, actions=self.actions)
        if self.status not in FINAL_STATUSES:
            rep["note"] = "the run has not ended: this report is partial"
        if isinstance(self.meta.get("protocol"), dict):
            # the live run's line counters (only the supervisor saw the lines it dropped)
            sup = {"protocol": self.meta["protocol"], "state_errors": self.state.errors}
            if self.state.error_messages:
                sup["state_error_messages"] = self.state.error_messages
            rep["supervisor"] = sup
        return rep


def load_report(run_dir: str | os.PathLike, lang: str | None = None) -> dict:
    """The stored report.json when the run has ended (and ``lang`` matches the run's), else
    one rebuilt from the events."""
    store = RunDir(run_dir)
    meta = store.read_meta()
    if lang is None or lang == meta.get("lang", "en"):
        rep = store.read_report()
        if rep is not None:
            return rep
    return Replayed(run_dir, lang).report()


def replay_state(run_dir: str | os.PathLike, lang: str | None = None):
    """The state (a ``corelink.SafeState``) rebuilt from every event stored in ``run_dir``."""
    return Replayed(run_dir, lang).state
