"""Policy and actions: a finding's policy (``warn``/``pause``/``kill``) applied, pause and
resume (cooperative in a distributed run: the ranks wait at a step boundary), kill, the
``action`` and ``status`` events that record them.

Part of ``Supervisor`` (a room of it, see supervisor.py): the methods here share its state.
"""
from __future__ import annotations

import time
from typing import Any

from segwatch.protocol import make_event
from segwatch.runs import corelink

from .headless import PREFIX, by_word, finding_line, tr

#: Findings that ``policy.on_collapse`` acts on.
COLLAPSE_FINDINGS = ("pred.collapse", "metric.single_class_signature")
#: Findings that ``policy.on_nonfinite`` acts on.
NONFINITE_FINDINGS = ("loss.nonfinite", "grad.nonfinite")
POLICIES = ("warn", "pause", "kill")


class PolicyRoom:
    """Policy and actions of the ``Supervisor``."""

    def _init_policy(self, config: Any, on_collapse: str | None, on_nonfinite: str | None) -> None:
        """The policies in force (options over the config); raises ValueError for an unknown one."""
        pol = corelink.policy_of(config)
        self.on_collapse = on_collapse or pol["on_collapse"]
        self.on_nonfinite = on_nonfinite or pol["on_nonfinite"]
        for name, val in (("on_collapse", self.on_collapse), ("on_nonfinite", self.on_nonfinite)):
            if val not in POLICIES:
                raise ValueError(f"policy.{name} must be one of {'|'.join(POLICIES)}, not {val!r}")
        if config is not None and getattr(config, "policy", None) is not None:
            # The resolved config handed to the shim and stored says what is in force.
            try:
                config.policy.on_collapse = self.on_collapse
                config.policy.on_nonfinite = self.on_nonfinite
            except Exception:
                pass
        self.actions: list[dict] = []
        self._killed_by: str | None = None  # "policy" | "user" | "signal"
        self._paused = False
        self._paused_note = 0.0
        self._tstp_paused = False

    def _on_finding(self, finding: Any) -> None:
        try:
            d = finding.to_dict(self.lang)
        except Exception:
            d = {"id": getattr(finding, "id", "?"), "severity": getattr(finding, "severity", "info")}
        fid = d.get("id") or "?"
        fields = {k: v for k, v in d.items() if k not in ("v", "type", "t")}
        fields.setdefault("severity", "info")
        self._emit(make_event("finding", **fields))
        if self.headless:
            self._say(finding_line(finding, self.lang))
        if fid in COLLAPSE_FINDINGS:
            self._apply_policy(self.on_collapse, fid)
        elif fid in NONFINITE_FINDINGS:
            self._apply_policy(self.on_nonfinite, fid)

    def _apply_policy(self, policy: str, fid: str) -> None:
        if policy == "warn" or self._exited_at is not None or self._killing is not None:
            return
        if policy == "pause" and not self._paused:
            self._pause(fid, by="policy")
        elif policy == "kill":
            self._kill(fid, by="policy")

    def _record_action(self, kind: str, finding: str | None, by: str, **extra: Any) -> dict:
        step = corelink.safe_int(getattr(self.state, "step", 0))
        ev = make_event("action", kind=kind, finding=finding, step=step, by=by, **extra)
        self.actions.append({"kind": kind, "finding": finding, "step": step, "by": by, "t": ev["t"]})
        self._emit(ev)
        return ev

    def _pause(self, finding: str | None, by: str, quiet: bool = False) -> None:
        self._record_action("pause", finding, by)
        if self.dist is not None:
            # cooperative: every rank waits at its next optimizer-step boundary (SIGSTOP of
            # one rank would make the others' collectives time out)
            from .dist import set_pause

            try:
                set_pause(self.run_dir)
            except OSError as exc:
                self._say(f"{PREFIX} cannot create the pause file ({exc}); stopping the ranks with SIGSTOP")
                self.tree.pause()
        else:
            self.tree.pause()
        self._paused = True
        self._paused_note = time.monotonic()
        self._set_status("paused", pid=self.child.pid)
        if self.headless and not quiet:
            why = tr("why", self.lang, finding=finding, n=self.state.step) if finding else ""
            key = "paused_coop" if self.dist is not None else "paused_by"
            self._say(f"{PREFIX} " + tr(key, self.lang, by=by_word(by, self.lang), why=why, run=self.run_dir))

    def _resume(self, by: str) -> None:
        self._record_action("resume", None, by)
        self._tree_resume()
        self._paused = False
        self._set_status("running", pid=self.child.pid)
        if self.headless:
            self._say(f"{PREFIX} " + tr("resumed_by", self.lang, by=by_word(by, self.lang)))

    def _kill(self, finding: str | None, by: str) -> None:
        self._record_action("kill", finding, by)
        self._killed_by = by
        if self.headless:
            why = tr("why", self.lang, finding=finding, n=self.state.step) if finding else ""
            self._say(f"{PREFIX} " + tr("killing", self.lang, by=by_word(by, self.lang), why=why))
        self._start_term()

    def _set_status(self, status: str, **fields: Any) -> None:
        self.status = status
        fields.setdefault("exit_code", self.exit_code)
        self._emit(make_event("status", status=status, **fields))
        try:
            self.store.write_meta(status=status)
        except OSError:
            pass
