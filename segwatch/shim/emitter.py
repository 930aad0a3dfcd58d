"""Non-blocking event emitters used by the shim.

The training thread only ever calls ``emit(event)``, which puts the event dict on a
bounded queue with ``put_nowait`` and returns; a full queue drops the event and counts
it. A daemon thread encodes events with ``segwatch.protocol.encode`` and writes them to
the supervisor's Unix socket, or, when there is no socket (unset, unreachable, or broken
mid-run), appends them to ``RUN_DIR/events.shim.jsonl`` so that nothing is lost. If
neither is available, events are counted as dropped.

Nothing here may raise into training.
"""
from __future__ import annotations

import os
import queue
import socket
import threading
import time
from typing import Any

from segwatch.protocol import ProtocolError, encode

FALLBACK_NAME = "events.shim.jsonl"
_STOP = object()


class BaseEmitter:
    """Interface shared by every emitter: ``emit``, ``close``, counters."""

    def __init__(self) -> None:
        self.dropped = 0   # events that could not be delivered (queue full, encode error, no sink)
        self.events = 0    # events accepted by ``emit``

    def emit(self, event: dict) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def close(self, timeout: float = 2.0) -> None:
        pass


class NullEmitter(BaseEmitter):
    """Accepts and discards everything (used by the overhead benchmark)."""

    def emit(self, event: dict) -> None:
        self.events += 1


class MemoryEmitter(BaseEmitter):
    """Keeps events in a list (tests, benchmark, in-process use)."""

    def __init__(self, encode_events: bool = False) -> None:
        super().__init__()
        self.items: list[dict] = []
        self._encode = encode_events

    def emit(self, event: dict) -> None:
        if self._encode:
            try:
                encode(event)
            except (ProtocolError, TypeError, ValueError):
                self.dropped += 1
                return
        self.items.append(event)
        self.events += 1

    def of_type(self, type_: str) -> list[dict]:
        return [e for e in self.items if e.get("type") == type_]


class ThreadEmitter(BaseEmitter):
    """Bounded queue + daemon writer thread; socket first, fallback file second."""

    RECONNECT_EVERY_S = 2.0
    RECONNECT_MAX = 5

    def __init__(self, socket_path: str | None, run_dir: str | None, maxsize: int = 10000,
                 connect_timeout: float = 1.0) -> None:
        super().__init__()
        self.socket_path = socket_path or None
        self.run_dir = run_dir or None
        self.mode = "none"          # "socket" | "file" | "none"
        self.fallbacks = 0          # how often we fell back from socket to file
        self.write_errors = 0
        self._q: queue.Queue = queue.Queue(maxsize=maxsize)
        self._sock: socket.socket | None = None
        self._file = None
        self._reconnects = 0
        self._last_reconnect = 0.0
        self._connect_timeout = connect_timeout
        self._closed = False
        if self.socket_path and self._connect():
            self.mode = "socket"
        elif self._open_file():
            self.mode = "file"
        self._thread = threading.Thread(target=self._run, name="segwatch-emitter", daemon=True)
        self._thread.start()

    # -- training-thread side -------------------------------------------------------------
    def emit(self, event: dict) -> None:
        if self._closed:
            self.dropped += 1
            return
        try:
            self._q.put_nowait(event)
            self.events += 1
        except queue.Full:
            self.dropped += 1
        except Exception:  # never raise into training
            self.dropped += 1

    def close(self, timeout: float = 2.0) -> None:
        """Flush what is queued, waiting at most ``timeout`` seconds, then stop."""
        if self._closed:
            return
        self._closed = True
        deadline = time.monotonic() + max(0.0, timeout)
        try:
            self._q.put(_STOP, timeout=max(0.01, timeout))
        except Exception:
            pass
        self._thread.join(max(0.0, deadline - time.monotonic()))
        # Whatever is still queued (writer stuck) is lost: count it.
        try:
            left = self._q.qsize()
            self.dropped += max(0, left - (1 if self._thread.is_alive() else 0))
        except Exception:
            pass

    # -- writer-thread side ---------------------------------------------------------------
    def _connect(self) -> bool:
        try:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(self._connect_timeout)
            s.connect(self.socket_path)
            s.settimeout(5.0)
            self._sock = s
            return True
        except OSError:
            self._sock = None
            return False

    def _open_file(self) -> bool:
        if self._file is not None:
            return True
        if not self.run_dir:
            return False
        try:
            os.makedirs(self.run_dir, exist_ok=True)
            self._file = open(os.path.join(self.run_dir, FALLBACK_NAME), "ab", buffering=0)
            return True
        except OSError:
            self._file = None
            return False

    def _maybe_reconnect(self) -> None:
        if not self.socket_path or self._reconnects >= self.RECONNECT_MAX:
            return
        now = time.monotonic()
        if now - self._last_reconnect < self.RECONNECT_EVERY_S:
            return
        self._last_reconnect = now
        self._reconnects += 1
        if self._connect():
            self.mode = "socket"

    def _write(self, line: bytes) -> None:
        if self.mode == "socket":
            try:
                self._sock.sendall(line)  # type: ignore[union-attr]
                return
            except OSError:
                self.fallbacks += 1
                try:
                    self._sock.close()  # type: ignore[union-attr]
                except OSError:
                    pass
                self._sock = None
                self.mode = "file" if self._open_file() else "none"
                self._last_reconnect = time.monotonic()
        elif self.socket_path:
            self._maybe_reconnect()
            if self.mode == "socket":
                return self._write(line)
        if self.mode == "file" and self._file is not None:
            try:
                self._file.write(line)
                return
            except OSError:
                self.write_errors += 1
        self.dropped += 1

    def _run(self) -> None:
        while True:
            try:
                ev = self._q.get()
            except Exception:  # pragma: no cover
                continue
            if ev is _STOP:
                break
            try:
                line = encode(ev)
            except Exception:
                self.dropped += 1
                continue
            try:
                self._write(line)
            except Exception:
                self.dropped += 1
        for h in (self._sock, self._file):
            try:
                if h is not None:
                    h.close()
            except Exception:
                pass


def emitter_from_env(env: dict[str, Any] | None = None) -> BaseEmitter:
    env = os.environ if env is None else env
    return ThreadEmitter(env.get("SEGWATCH_SOCKET") or None, env.get("SEGWATCH_RUN_DIR") or None)
