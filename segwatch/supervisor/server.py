"""The supervisor's sockets: listeners (Unix, optional loopback TCP), connections, the
control commands, subscribers catching up with ``events.jsonl`` then following live.

Part of ``Supervisor`` (a room of it, see supervisor.py): the methods here share its state.
"""
from __future__ import annotations

import os
import secrets
import selectors
import socket
import time
from typing import Any

from segwatch.protocol import SHIM_TYPES, LineDecoder, encode, make_event
from segwatch.runs import corelink, socket_path_for

MAX_CLIENT_BUFFER = 64 << 20  # a subscriber this far behind is dropped


class _Conn:
    __slots__ = ("sock", "decoder", "out", "tcp", "subscribed", "live", "history", "shim", "peer", "peer_pid",
                 "trusted", "spoke")

    def __init__(self, sock: socket.socket, tcp: bool) -> None:
        self.sock = sock
        self.decoder = LineDecoder()
        self.out = bytearray()
        self.tcp = tcp
        self.subscribed = False
        self.live = False      # subscribed and caught up with events.jsonl: gets events as they happen
        self.history = None    # events.jsonl opened for a subscriber still catching up
        self.shim = False
        self.peer = ""
        self.peer_pid: int | None = None   # the connecting process (SO_PEERCRED), Unix sockets only
        self.trusted: bool | None = None   # may send training events: a process of the training's tree
        self.spoke = False     # has sent a line (a viewer or ``ctl`` client says what it is at once)


def _peer_pid(sock: socket.socket) -> int | None:
    """The pid of the process at the other end of a Unix socket (Linux SO_PEERCRED)."""
    opt = getattr(socket, "SO_PEERCRED", None)
    if opt is None:
        return None
    try:
        import struct

        pid, _uid, _gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, opt, struct.calcsize("3i")))
        return pid if pid > 0 else None
    except (OSError, ValueError):
        return None


def _in_tree(pid: int, root: int) -> bool:
    """``pid`` is ``root``, a descendant of it, or in its process group."""
    if pid == root:
        return True
    try:
        if os.getpgid(pid) == root:
            return True
    except OSError:
        pass
    try:
        import psutil

        return any(p.pid == root for p in psutil.Process(pid).parents())
    except Exception:
        return False


class ServerRoom:
    """Sockets and connections of the ``Supervisor``."""

    def _init_server(self) -> None:
        self.token: str | None = None
        self.socket_path: str | None = None
        self._listeners: list[tuple[socket.socket, bool]] = []
        self._conns: dict[int, _Conn] = {}
        self._closed_conn_invalid = 0
        self._closed_conn_oversized = 0
        self._proto_errors: list[str] = []
        self._rejected_types = 0
        self._foreign = 0          # training events from a process outside the training (or over TCP)
        self._unauthorized = 0     # TCP control commands with a wrong or missing token

    def _open_listeners(self) -> str | None:
        """The Unix socket (0600) and, with ``listen``, the TCP one and its token; returns
        the TCP address (``host:port``) or None."""
        self.socket_path = socket_path_for(self.run_dir)
        try:
            os.unlink(self.socket_path)
        except FileNotFoundError:
            pass
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        srv.bind(self.socket_path)
        os.chmod(self.socket_path, 0o600)
        srv.listen(64)
        srv.setblocking(False)
        self._listeners.append((srv, False))
        self._sel.register(srv, selectors.EVENT_READ, ("listen", False))

        tcp_addr = None
        if self.listen:
            host, _, port = self.listen.rpartition(":")
            host = (host or "127.0.0.1").strip("[]")
            if host not in ("127.0.0.1", "localhost", "::1") and not self.allow_remote:
                raise ValueError(f"--listen accepts loopback addresses only, not {host!r} "
                                 "(another address needs --allow-remote)")
            fam = socket.AF_INET6 if ":" in host else socket.AF_INET
            tsrv = socket.socket(fam, socket.SOCK_STREAM)
            tsrv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            tsrv.bind(("127.0.0.1" if host == "localhost" else host, int(port or 0)))
            tsrv.listen(16)
            tsrv.setblocking(False)
            self._listeners.append((tsrv, True))
            self._sel.register(tsrv, selectors.EVENT_READ, ("listen", True))
            self.token = secrets.token_urlsafe(24)
            h, p = tsrv.getsockname()[:2]
            tcp_addr = f"{h}:{p}"
        return tcp_addr

    def _accept(self, srv: socket.socket, tcp: bool) -> None:
        while True:
            try:
                sock, addr = srv.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            sock.setblocking(False)
            conn = _Conn(sock, tcp)
            conn.peer = str(addr)
            if not tcp:
                conn.peer_pid = _peer_pid(sock)
            self._conns[sock.fileno()] = conn
            self._sel.register(sock, selectors.EVENT_READ, ("conn", None))

    def _close_conn(self, fd: int) -> None:
        conn = self._conns.pop(fd, None)
        if conn is None:
            return
        if conn.history is not None:
            conn.history.close()
            conn.history = None
        self._closed_conn_invalid += conn.decoder.invalid
        self._closed_conn_oversized += conn.decoder.oversized
        for e in conn.decoder.errors:
            if len(self._proto_errors) < 10:
                self._proto_errors.append(e)
        try:
            self._sel.unregister(conn.sock)
        except (KeyError, ValueError):
            pass
        try:
            conn.sock.close()
        except OSError:
            pass

    def _read_conn(self, fd: int) -> None:
        conn = self._conns.get(fd)
        if conn is None:
            return
        try:
            data = conn.sock.recv(262144)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            # a last line without its newline: decode it too (a cut line is counted as invalid)
            self._handle_lines(fd, conn, b"\n")
            self._close_conn(fd)
            return
        self._handle_lines(fd, conn, data)

    def _handle_lines(self, fd: int, conn: _Conn, data: bytes) -> None:
        for ev in conn.decoder.feed(data):
            conn.spoke = True
            t = ev.get("type")
            if t == "control":
                self._control(conn, ev)
            elif t in SHIM_TYPES:
                if self._may_send_events(conn):
                    conn.shim = True
                    self._emit(ev)
                else:
                    self._foreign += 1
                    if len(self._proto_errors) < 10:
                        self._proto_errors.append(f"{t} event from {'TCP' if conn.tcp else f'pid {conn.peer_pid}'}, "
                                                  "not from the training: ignored")
            else:
                self._rejected_types += 1
                if len(self._proto_errors) < 10:
                    self._proto_errors.append(f"a client may not send {t!r} events: ignored")
            if fd not in self._conns:
                return

    @staticmethod
    def _may_hold_events(conn: _Conn) -> bool:
        """The ending waits for this connection's EOF: the shim's, or a local one that has
        said nothing yet (a training that wrote its events and exited before the first read;
        a viewer or ``ctl`` client identifies itself with its first line)."""
        return conn.shim or (not conn.tcp and not conn.subscribed and conn.trusted is not False
                             and not conn.spoke)

    def _may_send_events(self, conn: _Conn) -> bool:
        """Training events are accepted only from the training's own processes: never over
        TCP (viewers), and on the Unix socket only from a process of the child's tree (its
        pid from SO_PEERCRED: the child, a descendant, or a member of its process group).
        Where the peer cannot be known, the socket's owner-only mode is the guard."""
        if conn.trusted is None:
            if conn.tcp:
                conn.trusted = False
            elif conn.peer_pid is None or self.child is None:
                conn.trusted = True
            else:
                conn.trusted = _in_tree(conn.peer_pid, self.child.pid)
        return conn.trusted

    def _send(self, conn: _Conn, data: bytes) -> None:
        conn.out.extend(data)
        if len(conn.out) > MAX_CLIENT_BUFFER:  # a subscriber that does not read: let it go
            self._close_conn(conn.sock.fileno())
            return
        self._flush_conn(conn)

    def _flush_conn(self, conn: _Conn) -> None:
        while conn.out:
            try:
                n = conn.sock.send(conn.out)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                conn.out.clear()
                return
            del conn.out[:n]
        want = selectors.EVENT_READ | (selectors.EVENT_WRITE if conn.out or conn.history else 0)
        try:
            self._sel.modify(conn.sock, want, ("conn", None))
        except (KeyError, ValueError):
            pass

    def _writable(self, fd: int) -> None:
        conn = self._conns.get(fd)
        if conn is None:
            return
        self._flush_conn(conn)
        if not conn.out and conn.history is not None:
            self._pump_history(conn)

    def _pump_history(self, conn: _Conn) -> None:
        """Send a catching-up subscriber the next piece of events.jsonl; at its end the
        subscriber goes live (we are the only writer, so the file holds whole lines and
        nothing can be appended between the last read and the switch)."""
        while conn.history is not None and len(conn.out) < (1 << 20):
            chunk = conn.history.read(1 << 18)
            if not chunk:
                conn.history.close()
                conn.history = None
                conn.live = True
                break
            conn.out.extend(chunk)
        self._flush_conn(conn)

    def _ack(self, conn: _Conn, cmd: str, ok: bool, error: str | None = None, **extra: Any) -> None:
        ack = make_event("ack", ok=ok, cmd=cmd, error=error, **extra)
        self._send(conn, encode(ack))

    def _control(self, conn: _Conn, ev: dict) -> None:
        cmd = ev.get("cmd")
        if conn.tcp and (not self.token or not secrets.compare_digest(str(ev.get("token") or ""), self.token)):
            self._unauthorized += 1
            self._ack(conn, str(cmd), False, "bad or missing token")
            return
        live = self._exited_at is None and self._killing is None
        if cmd == "ping":
            self._ack(conn, cmd, True, status=self.status, step=corelink.safe_int(getattr(self.state, "step", 0)),
                      pid=self.child.pid if self.child else None, run_dir=self.run_dir)
        elif cmd == "pause":
            if not live:
                self._ack(conn, cmd, False, "the run is ending")
            else:
                if not self._paused:
                    self._pause(None, by="user")
                self._ack(conn, cmd, True, status=self.status)
        elif cmd == "resume":
            if not live:
                self._ack(conn, cmd, False, "the run is ending")
            else:
                if self._paused:
                    self._resume(by="user")
                self._ack(conn, cmd, True, status=self.status)
        elif cmd == "kill":
            if self._exited_at is not None:
                self._ack(conn, cmd, False, "the run has already ended")
            else:
                if self._killing is None:
                    self._kill(None, by="user")
                self._ack(conn, cmd, True, status=self.status)
        elif cmd == "subscribe":
            if conn.subscribed:
                self._ack(conn, cmd, True)
                return
            conn.subscribed = True
            self._ack(conn, cmd, True)
            try:
                conn.history = self.store.open_events()
            except OSError:
                conn.live = True
            self._pump_history(conn)
        else:
            self._ack(conn, str(cmd), False, f"unknown command {cmd!r}")

    def _broadcast(self, line: bytes) -> None:
        """An event just stored, to every subscriber that has caught up."""
        for conn in list(self._conns.values()):
            if conn.live:
                self._send(conn, line)

    def _protocol_counts(self) -> dict:
        invalid = self._closed_conn_invalid + sum(c.decoder.invalid for c in self._conns.values())
        oversized = self._closed_conn_oversized + sum(c.decoder.oversized for c in self._conns.values())
        errors = list(self._proto_errors)
        for c in self._conns.values():
            errors.extend(c.decoder.errors)
        return {"invalid": invalid, "oversized": oversized, "rejected_types": self._rejected_types,
                "foreign": self._foreign, "unauthorized": self._unauthorized,
                "errors": errors[:10], "store_errors": self._store_errors}

    def _close_server(self) -> None:
        """The end: subscribers get the rest of the stream (within reason), then every
        connection and listener is closed and the socket file removed."""
        deadline = time.monotonic() + 5.0   # subscribers get the rest of the stream, within reason
        for fd in list(self._conns):
            conn = self._conns.get(fd)
            if conn is not None and (conn.out or conn.history is not None):
                try:
                    conn.sock.setblocking(True)
                    conn.sock.settimeout(max(0.1, deadline - time.monotonic()))
                    if conn.out:
                        conn.sock.sendall(conn.out)
                    while conn.history is not None:
                        chunk = conn.history.read(1 << 18)
                        if not chunk:
                            break
                        conn.sock.sendall(chunk)
                except OSError:
                    pass
            self._close_conn(fd)
        for srv, _ in self._listeners:
            try:
                srv.close()
            except OSError:
                pass
        if self.socket_path:
            try:
                os.unlink(self.socket_path)
            except OSError:
                pass
