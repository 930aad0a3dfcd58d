"""Viewers' side of a run: ``RunClient`` (events + control) and ``relay`` (the SSH bridge).

Targets:
- a run directory (local): events come from ``segwatch.runs.RunTail`` (``events.jsonl`` as it
  grows); control goes through the run's Unix socket (path in meta.json);
- ``ssh://host/path/to/run`` (or ``ssh://user@host:port/path``): runs
  ``ssh host segwatch relay /path/to/run`` and speaks JSON lines over its stdin/stdout;
- ``tcp://127.0.0.1:PORT`` (a run started with ``--listen``): connects, sends
  ``subscribe`` with the token (``?token=...`` in the target, or ``token=``, or the
  ``SEGWATCH_TOKEN`` environment variable) and receives the stored then the live events.

``events(follow=True)`` yields the stored events, then the live ones, and returns when the
run has reached a final status and everything is read (or the supervisor is gone: then a
synthetic ``status: lost`` event, not stored anywhere, ends the stream). ``poll()`` is the
non-blocking form for UIs with a timer. ``control(cmd)`` returns the supervisor's ``ack``.
"""
from __future__ import annotations

import os
import queue
import shlex
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any, Iterator
from urllib.parse import parse_qs, unquote, urlparse

from segwatch.protocol import CONTROL_COMMANDS, LineDecoder, encode, make_event

from segwatch.runs import FINAL_STATUSES, RunDir, effective_status
from segwatch.runs.tail import RunTail, is_final as _is_final

POLL_INTERVAL = 0.05  # 20 Hz
POLL_MAX_EVENTS = 4096  # events per poll(): a 200k-step run's history is ~40k events, ~170 MB decoded


class ControlError(RuntimeError):
    """The supervisor could not be reached, or did not answer."""


def send_control(socket_path: str, cmd: str, timeout: float = 5.0, token: str | None = None) -> dict:
    """Send one control command to a supervisor's Unix socket and return its ack."""
    fields: dict[str, Any] = {"cmd": cmd}
    if token:
        fields["token"] = token
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(socket_path)
            s.sendall(encode(make_event("control", **fields)))
            return _read_ack(s, cmd, timeout)
    except (OSError, socket.timeout) as exc:
        raise ControlError(f"cannot reach the supervisor at {socket_path}: {exc}") from None


def _read_ack(s: socket.socket, cmd: str, timeout: float) -> dict:
    dec = LineDecoder()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        data = s.recv(65536)
        if not data:
            break
        for ev in dec.feed(data):
            if ev.get("type") == "ack":
                return ev
    raise ControlError(f"no answer to {cmd!r} from the supervisor")


class RunClient:
    """A run seen from a viewer: stored + live events, and control commands."""

    def __init__(self, target: str | os.PathLike, token: str | None = None) -> None:
        self.target = str(target)
        self.kind = "local"
        self.run_dir: Path | None = None
        self.token = token
        self.final = False
        self.counter = LineDecoder()
        self._stream: _StreamClient | None = None
        if self.target.startswith("ssh://"):
            self.kind = "ssh"
            self._stream = _StreamClient.ssh(self.target)
        elif self.target.startswith("tcp://"):
            self.kind = "tcp"
            u = urlparse(self.target)
            tok = token or (parse_qs(u.query).get("token") or [None])[0] or os.environ.get("SEGWATCH_TOKEN")
            if not tok:
                raise ValueError("a tcp:// target needs a token (?token=..., --token or SEGWATCH_TOKEN)")
            self.token = tok
            self._stream = _StreamClient.tcp(u.hostname or "127.0.0.1", u.port or 0, tok)
        else:
            self.run_dir = Path(self.target).expanduser().absolute()
            self.store = RunDir(self.run_dir)
        self._tail: RunTail | None = RunTail(self.store, self.counter) if self.kind == "local" else None

    # ---- description -------------------------------------------------------------
    def meta(self) -> dict:
        if self.kind == "local":
            return self.store.read_meta()
        return dict(self._stream.meta) if self._stream else {}

    def error(self) -> str | None:
        """Why a remote stream ended early (ssh failed, the relay could not open the run)."""
        if self._stream is not None:
            return self._stream.error()
        return None

    def status(self) -> str:
        if self.kind == "local":
            return effective_status(self.meta())
        return "unknown"

    def __repr__(self) -> str:  # pragma: no cover
        return f"RunClient({self.target!r})"

    # ---- events --------------------------------------------------------------------
    def poll(self, max_events: int = POLL_MAX_EVENTS) -> list[dict]:
        """Events that have arrived since the last call (never blocks); about ``max_events``
        at most (a local run's file is read by the MiB), so that attaching to a long run's
        history holds a batch at a time, not the whole history."""
        if self._stream is not None:
            out = self._stream.take(max_events)
            if any(_is_final(e) for e in out):
                self.final = True
            if self._stream.closed and self._stream.empty():
                self.final = True
            return out
        return self._poll_local(max_events)

    def _poll_local(self, max_events: int) -> list[dict]:
        out = self._tail.poll(max_events)
        if self._tail.final:
            self.final = True
        return out

    def events(self, follow: bool = True, poll_interval: float = POLL_INTERVAL) -> Iterator[dict]:
        """Stored events, then (``follow``) live ones until the run has ended."""
        while True:
            batch = self.poll()
            yield from batch
            if self.final:
                # drain anything written after the final status (there should be nothing)
                while True:
                    rest = self.poll()
                    if not rest:
                        return
                    yield from rest
            if not follow and not batch:
                return
            if not batch:
                time.sleep(poll_interval)

    # ---- control -------------------------------------------------------------------
    def control(self, cmd: str, timeout: float = 5.0) -> dict:
        if cmd not in CONTROL_COMMANDS:
            raise ValueError(f"unknown command {cmd!r}; one of {', '.join(CONTROL_COMMANDS)}")
        if self._stream is not None:
            return self._stream.control(cmd, timeout)
        meta = self.store.read_meta()
        sock = meta.get("socket")
        if not sock:
            raise ControlError(f"{self.run_dir}: meta.json names no socket")
        if meta.get("status") in FINAL_STATUSES:
            raise ControlError(f"the run has ended ({meta.get('status')})")
        return send_control(sock, cmd, timeout)

    def close(self) -> None:
        if self._tail is not None:
            self._tail.close()
        if self._stream is not None:
            self._stream.close()

    def __enter__(self) -> "RunClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class _StreamClient:
    """JSON lines over a byte stream (ssh relay or TCP): a reader thread splits events from acks."""

    def __init__(self, rfile: IO[bytes], write: Any, closer: Any) -> None:
        self._rfile = rfile
        self._write = write
        self._closer = closer
        self._events: "queue.Queue[dict]" = queue.Queue()
        self._acks: "queue.Queue[dict]" = queue.Queue()
        self.closed = False
        self.meta: dict = {}
        self.counter = LineDecoder()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._reader, daemon=True)
        self._thread.start()

    @classmethod
    def ssh(cls, target: str) -> "_StreamClient":
        """``ssh [SEGWATCH_SSH_OPTS] [-p PORT] [user@]host SEGWATCH_REMOTE relay PATH``: no port
        is opened anywhere, the relay speaks JSON lines over ssh's stdin/stdout. The path is
        absolute (``ssh://host/abs/path``) or relative to the remote home (``ssh://host/~/runs/x``)."""
        cmd = ssh_command(target)
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

        def write(data: bytes) -> None:
            proc.stdin.write(data)
            proc.stdin.flush()

        def closer() -> None:
            try:
                proc.stdin.close()
            except OSError:
                pass
            try:
                proc.terminate()
                proc.wait(timeout=2)
            except Exception:
                pass

        client = cls(proc.stdout, write, closer)
        client.proc = proc
        client.stderr_tail = bytearray()

        def read_stderr() -> None:   # never let ssh block on a full stderr pipe; keep the end for errors
            try:
                for line in proc.stderr:
                    client.stderr_tail.extend(line)
                    del client.stderr_tail[:-4000]
            except (OSError, ValueError):
                pass

        threading.Thread(target=read_stderr, daemon=True).start()
        return client

    proc: "subprocess.Popen | None" = None
    stderr_tail: bytearray | None = None

    def error(self) -> str | None:
        """Why the stream ended, when ssh (or the remote relay) failed: its exit status and
        the last lines it wrote on stderr."""
        if self.proc is None or self.proc.poll() in (None, 0):
            return None
        tail = bytes(self.stderr_tail or b"").decode("utf-8", "replace").strip()
        return f"ssh exited with status {self.proc.returncode}" + (f": {tail[-1500:]}" if tail else "")

    @classmethod
    def tcp(cls, host: str, port: int, token: str) -> "_StreamClient":
        s = socket.create_connection((host, port), timeout=5)
        s.settimeout(None)
        rfile = s.makefile("rb")

        def write(data: bytes) -> None:
            s.sendall(data)

        def closer() -> None:
            try:
                s.close()
            except OSError:
                pass

        client = cls(rfile, write, closer)
        client.token = token
        ack = client.control("subscribe", timeout=5.0)
        if not ack.get("ok"):
            client.close()
            raise ControlError(f"the supervisor refused: {ack.get('error')}")
        return client

    token: str | None = None

    def _send(self, ev: dict) -> None:
        with self._lock:
            self._write(encode(ev))

    def _reader(self) -> None:
        try:
            for line in self._rfile:
                for ev in self.counter.feed(line if line.endswith(b"\n") else line + b"\n"):
                    if ev.get("type") == "ack":
                        self._acks.put(ev)
                    else:
                        self._events.put(ev)
        except (OSError, ValueError):
            pass
        finally:
            self.closed = True

    def take(self, n: int) -> list[dict]:
        out = []
        while len(out) < n:
            try:
                out.append(self._events.get_nowait())
            except queue.Empty:
                break
        return out

    def empty(self) -> bool:
        return self._events.empty()

    def control(self, cmd: str, timeout: float) -> dict:
        fields: dict[str, Any] = {"cmd": cmd}
        if self.token:
            fields["token"] = self.token
        try:
            self._send(make_event("control", **fields))
        except (OSError, ValueError) as exc:
            raise ControlError(f"connection closed: {exc}") from None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                ack = self._acks.get(timeout=0.1)
            except queue.Empty:
                if self.closed:
                    break
                continue
            if ack.get("cmd") in (cmd, None):
                return ack
        why = self.error()
        raise ControlError(f"no answer to {cmd!r}" + (f" ({why})" if why else ""))

    def close(self) -> None:
        self._closer()


def ssh_command(target: str) -> list[str]:
    """The ssh command line for ``ssh://[user@]host[:port]/path/to/run``.

    ``SEGWATCH_SSH`` names the ssh program (default ``ssh``), ``SEGWATCH_SSH_OPTS`` adds
    options (shell words, e.g. ``-i key -o StrictHostKeyChecking=accept-new``), and
    ``SEGWATCH_REMOTE`` is the command that runs segwatch on the remote side (default
    ``segwatch``; e.g. ``/opt/venv/bin/python -m segwatch``)."""
    u = urlparse(target)
    if u.scheme != "ssh" or not u.hostname or not u.path or u.path == "/":
        raise ValueError(f"bad ssh target {target!r}; expected ssh://[user@]host[:port]/path/to/run")
    try:
        port = u.port
    except ValueError:
        raise ValueError(f"bad port in ssh target {target!r}") from None
    dest = f"{u.username}@{u.hostname}" if u.username else u.hostname
    cmd = [*shlex.split(os.environ.get("SEGWATCH_SSH", "ssh")), "-o", "BatchMode=yes"]
    cmd += shlex.split(os.environ.get("SEGWATCH_SSH_OPTS", ""))
    if port:
        cmd += ["-p", str(port)]
    path = unquote(u.path)
    if path.startswith("/~/") or path == "/~":
        remote_path = "~/" + shlex.quote(path[3:]) if path[3:] else "~"
    else:
        remote_path = shlex.quote(path)
    remote = os.environ.get("SEGWATCH_REMOTE", "segwatch")
    cmd += ["--", dest, f"{remote} relay {remote_path}"]
    return cmd


def relay(run_dir: str | os.PathLike, stdin: IO[bytes] | None = None, stdout: IO[bytes] | None = None) -> int:
    """``segwatch relay RUN_DIR``: the run's events (stored, then live) on stdout; control
    lines read from stdin are forwarded to the run's socket and answered with ``ack`` lines
    on stdout. Returns when the run has ended and every event was written."""
    stdin = stdin if stdin is not None else sys.stdin.buffer
    stdout = stdout if stdout is not None else sys.stdout.buffer
    client = RunClient(run_dir)
    lock = threading.Lock()

    def write(data: bytes) -> bool:
        with lock:
            try:
                stdout.write(data)
                stdout.flush()
                return True
            except (OSError, ValueError):
                return False

    def forward_controls() -> None:
        dec = LineDecoder()
        try:
            for line in stdin:
                for ev in dec.feed(line if line.endswith(b"\n") else line + b"\n"):
                    if ev.get("type") != "control":
                        continue
                    cmd = ev.get("cmd")
                    try:
                        ack = client.control(cmd)
                    except (ControlError, ValueError) as exc:
                        ack = make_event("ack", ok=False, cmd=cmd, error=str(exc))
                    write(encode(ack))
        except (OSError, ValueError):
            pass

    threading.Thread(target=forward_controls, daemon=True).start()
    try:
        for ev in client.events(follow=True):
            if not write(encode(ev)):
                return 1
    except KeyboardInterrupt:
        return 130
    finally:
        client.close()
    return 0
