"""Following a run directory live: ``RunTail`` reads ``events.jsonl`` as it grows.

``poll()`` returns the events appended since the last call (never blocks). The follow ends
(``final``) once a final ``status`` event is read, then the shim's fallback file (present
only when the supervisor could not merge it) is read once. When the supervisor is gone
without a final status, a synthetic ``status: lost`` event (stored nowhere) is returned;
if the training itself goes on, its shim appends to ``events.shim.jsonl`` and the tail
follows that file until the training's process is gone too.
"""
from __future__ import annotations

import time
from typing import IO

from segwatch.protocol import LineDecoder, make_event

from .store import FINAL_STATUSES, RunDir, decode_lines, pid_alive

#: Bytes read at a time while catching up.
TAIL_CHUNK = 1 << 20


def is_final(ev: dict) -> bool:
    """True for the ``status`` event that ends a run."""
    return ev.get("type") == "status" and ev.get("status") in FINAL_STATUSES


class RunTail:
    """A live reader of one run directory's events, in stored order."""

    def __init__(self, run: RunDir, counter: LineDecoder | None = None) -> None:
        self.run = run
        self.counter = counter if counter is not None else LineDecoder()
        self.final = False
        self._fh: IO[bytes] | None = None
        self._buf = bytearray()
        self._shim_done = False
        self._last_alive_check = 0.0
        self._lost_sent = False
        self._shim_fh: IO[bytes] | None = None
        self._shim_buf = bytearray()

    def poll(self, max_events: int) -> list[dict]:
        """Events appended since the last call; about ``max_events`` at most (the file is
        read by the MiB), so that catching up with a long history holds a batch at a time."""
        out: list[dict] = []
        if self._fh is None:
            try:
                self._fh = self.run.open_events()
            except FileNotFoundError:
                self._check_alive(out, force=False)
                return out
        while len(out) < max_events:
            chunk = self._fh.read(TAIL_CHUNK)
            if not chunk:
                break
            self._buf.extend(chunk)
            nl = self._buf.rfind(b"\n")
            if nl < 0:
                continue
            complete = bytes(self._buf[: nl + 1])
            del self._buf[: nl + 1]
            for ev in decode_lines(complete, self.counter):
                out.append(ev)
                if is_final(ev):
                    self.final = True
        if not out and not self.final and not self._lost_sent:
            self._check_alive(out, force=False)
        if self._lost_sent and not self._shim_done:
            self._poll_orphan(out, max_events - len(out))
        elif self.final and not self._shim_done:
            # a fallback file only exists when the supervisor could not merge it
            self._shim_done = True
            out.extend(self.run.shim_events(self.counter))
        return out

    def _poll_orphan(self, out: list[dict], room: int) -> None:
        """The supervisor is gone (``lost``) but the training may go on: its shim appends to
        ``events.shim.jsonl`` itself. Follow that file until the training's process is gone
        too, then the stream ends."""
        p = self.run.shim_events_path
        if self._shim_fh is None and p.exists():
            self._shim_fh = open(p, "rb")
        n0 = len(out)
        if self._shim_fh is not None:
            while len(out) - n0 < room:
                chunk = self._shim_fh.read(TAIL_CHUNK)
                if not chunk:
                    break
                self._shim_buf.extend(chunk)
                nl = self._shim_buf.rfind(b"\n")
                if nl < 0:
                    continue
                complete = bytes(self._shim_buf[: nl + 1])
                del self._shim_buf[: nl + 1]
                out.extend(decode_lines(complete, self.counter))
        if len(out) > n0:
            return
        now = time.monotonic()
        if now - self._last_alive_check < 0.5:
            return
        self._last_alive_check = now
        if not pid_alive(self.run.read_meta().get("child_pid")):
            if self._shim_fh is not None:   # one last read: lines written just before the exit
                rest = self._shim_fh.read()
                if rest:
                    self._shim_buf.extend(rest)
                    return
                self._shim_fh.close()
                self._shim_fh = None
            self._shim_done = True
            self.final = True

    def _check_alive(self, out: list[dict], force: bool) -> None:
        now = time.monotonic()
        if not force and now - self._last_alive_check < 1.0:
            return
        self._last_alive_check = now
        meta = self.run.read_meta()
        pid = meta.get("supervisor_pid")
        if meta.get("status") in FINAL_STATUSES:
            return  # the final status event is in the file; it will be read
        started = meta.get("started") if isinstance(meta.get("started"), (int, float)) else None
        if pid and not pid_alive(pid, started) and not self._lost_sent:
            # one more read: the supervisor may have written its last lines just before exiting
            if self._fh is not None:
                rest = self._fh.read()
                if rest:
                    self._buf.extend(rest)
                    return
            self._lost_sent = True
            orphan = pid_alive(meta.get("child_pid"))
            out.append(make_event("status", status="lost", exit_code=None, pid=meta.get("child_pid"),
                                  note="the supervisor is gone and the run never reached a final status"
                                  + ("; the training is still running: its own events follow"
                                     if orphan else "")))

    def close(self) -> None:
        for fh in (self._fh, self._shim_fh):
            if fh is not None:
                fh.close()
        self._fh = None
        self._shim_fh = None
