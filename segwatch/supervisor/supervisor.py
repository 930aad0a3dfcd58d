"""The supervisor: runs the training script under the shim and watches it.

One thread, one ``selectors`` loop over: the listening socket(s), every client connection
(the shim, viewers' control connections), the child's stdout and stderr pipes and a
self-pipe for signals. Every event, whatever its source, goes through ``_emit``:

    append to events.jsonl (flushed)  ->  RunState.ingest  ->  new findings
        -> a ``finding`` event (appended too), headless print, policy action

so the run directory always holds everything a viewer saw, in the same order, and
replaying it gives the same state.

Ending, however it happens (normal exit, crash, policy kill, a control ``kill``, SIGINT or
SIGTERM to segwatch, an internal error), goes through ``_finish``: the child's whole tree
is stopped, the final ``status`` event is written, meta.json gets ``ended``, and the report
is written to RUN_DIR/report.json (and ``--report``).
"""
from __future__ import annotations

import json
import os
import re
import secrets
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any, BinaryIO, Sequence

from segwatch.protocol import SHIM_TYPES, LineDecoder, ProtocolError, encode, make_event
from segwatch.runs import RunStore, corelink, finalize_report, socket_path_for

from .headless import PREFIX, StatusLines, by_word, finding_line, same_terminal, status_line, status_word, tr
from .gpu import NvmlSampler
from .miou_parse import MiouResolver
from .process import GpuMemProbe, ProcessTree, exit_status

#: Findings that ``policy.on_collapse`` acts on.
COLLAPSE_FINDINGS = ("pred.collapse", "metric.single_class_signature")
#: Findings that ``policy.on_nonfinite`` acts on.
NONFINITE_FINDINGS = ("loss.nonfinite", "grad.nonfinite")
POLICIES = ("warn", "pause", "kill")

_EOL = re.compile(rb"[\r\n]")
_ANSI = re.compile(r"\x1b(?:\[[0-9;?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[@-Z\\-_])")  # colours, cursor moves, titles
MAX_OUTPUT_LINE = 8192      # longer child output lines are cut in the event (the .log keeps all)
MAX_CLIENT_BUFFER = 64 << 20  # a subscriber this far behind is dropped
ECHO_HOLD = 0.2            # seconds a partial child output line is held before it is echoed anyway
PAUSED_REMINDER = 60.0     # seconds between headless reminders that the run is paused
DRAIN_AFTER_EXIT = 3.0      # seconds to collect the shim's last events after the child exited


class _Conn:
    __slots__ = ("sock", "decoder", "out", "tcp", "subscribed", "live", "history", "shim", "peer", "peer_pid",
                 "trusted")

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


class Supervisor:
    """Launch ``script`` under the shim, supervise it, return its exit status from ``run()``."""

    def __init__(
        self,
        script: str,
        script_args: Sequence[str] = (),
        *,
        run_dir: str | os.PathLike,
        config: Any = None,
        config_path: str | None = None,
        headless: bool = True,
        on_collapse: str | None = None,
        on_nonfinite: str | None = None,
        report_path: str | None = None,
        debug: bool = False,
        lang: str = "en",
        interval: float = 5.0,
        echo: bool | None = None,
        out: BinaryIO | None = None,
        err: BinaryIO | None = None,
        kill_timeout: float = 5.0,
        interrupt_timeout: float = 3.0,
        use_shim: bool = True,
        command: Sequence[str] | None = None,
        listen: str | None = None,
        allow_remote: bool = False,
        install_signals: bool | None = None,
        proc_interval: float = 2.0,
        extra_env: dict | None = None,
        dist: Any = None,
    ) -> None:
        self.script = str(script)
        self.script_args = list(script_args)
        self.config = config
        self.config_path = config_path
        self.headless = headless
        self.lang = lang
        self.interval = max(0.2, float(interval))
        self.echo = headless if echo is None else echo
        self._out = out if out is not None else getattr(sys.stdout, "buffer", None)
        self._err = err if err is not None else getattr(sys.stderr, "buffer", None)
        self.kill_timeout = kill_timeout
        self.interrupt_timeout = interrupt_timeout
        self.use_shim = use_shim
        self.command = list(command) if command else None
        self.listen = listen
        self.allow_remote = allow_remote
        self.install_signals = install_signals
        self.proc_interval = proc_interval
        self.extra_env = dict(extra_env or {})
        self.debug = debug
        self.report_path = report_path
        #: a ``dist.DistSpec`` for ``--nproc``/``--nnodes`` runs (torchrun), else None
        self.dist = dist if dist is not None and getattr(dist, "enabled", False) else None

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

        self.store = RunStore(run_dir)
        self.run_dir = str(self.store.path)
        self.state = corelink.SafeState(config, lang)
        self.exit_code: int | None = None
        self.status = "starting"
        self.token: str | None = None
        self.socket_path: str | None = None
        self.child: subprocess.Popen | None = None
        self.tree: ProcessTree | None = None
        self.actions: list[dict] = []
        self.written: list[str] = []

        self._sel: selectors.BaseSelector | None = None
        self._listeners: list[tuple[socket.socket, bool]] = []
        self._conns: dict[int, _Conn] = {}
        self._pipes: dict[int, tuple[str, Any]] = {}   # only when the output files cannot be made
        self._tails: dict[str, int] = {}                 # read fds on stdout.log / stderr.log
        self._partial: dict[str, bytearray] = {"stdout": bytearray(), "stderr": bytearray()}
        self._echo_pending: dict[str, bytearray] = {"stdout": bytearray(), "stderr": bytearray()}
        self._echo_since: dict[str, float] = {}
        # the child's last echoed byte per stream was not a newline (a tqdm bar left open)
        self._line_open: dict[str, bool] = {"stdout": False, "stderr": False}
        self._status_lines = StatusLines()
        self._signals: list[int] = []
        self._wake_r = self._wake_w = -1
        self._old_handlers: dict[int, Any] = {}
        self._old_wakeup: int | None = None
        self._killing: str | None = None  # None | "interrupt" | "term" | "kill"
        self._kill_deadline = 0.0
        self._killed_by: str | None = None  # "policy" | "user" | "signal"
        self._paused = False
        self._paused_note = 0.0
        self._tstp_paused = False
        self._exited_at: float | None = None
        self._closed_conn_invalid = 0
        self._closed_conn_oversized = 0
        self._proto_errors: list[str] = []
        self._rejected_types = 0
        self._foreign = 0          # training events from a process outside the training (or over TCP)
        self._unauthorized = 0     # TCP control commands with a wrong or missing token
        self._store_errors = 0
        self._crash: str | None = None
        self._finished = False
        self._miou = MiouResolver()
        self._gpu: GpuMemProbe | None = None
        self._nvml: NvmlSampler | None = None   # per-GPU sampling (gpu events); unavailable without NVML
        self._evals_seen = 0

    # ------------------------------------------------------------------ public
    def run(self) -> int:
        try:
            self._setup()
            if self._signals:  # interrupted before anything was launched
                self._killed_by = "user"
                self.exit_code = 128 + self._signals[0]
                return self.exit_code
            self._launch()
            self._loop()
        except BaseException as exc:  # noqa: BLE001 - the run must end cleanly whatever happens
            if isinstance(exc, KeyboardInterrupt):
                self._killed_by = self._killed_by or "user"
            else:
                self._crash = "".join(traceback.format_exception(exc)).rstrip()
                self._say(f"{PREFIX} internal error, stopping the training:\n{self._crash}")
        finally:
            self._finish()
        return self.exit_code if self.exit_code is not None else 1

    # ------------------------------------------------------------------ setup
    def _setup(self) -> None:
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._sel.register(self._wake_r, selectors.EVENT_READ, ("wake", None))

        install = self.install_signals
        if install is None:
            install = threading.current_thread() is threading.main_thread()
        if install:
            self._old_wakeup = signal.set_wakeup_fd(self._wake_w)
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                self._old_handlers[sig] = signal.signal(sig, self._on_signal)
            if self.headless:
                # Ctrl-Z stops the training with us, `fg` resumes both
                for sig in (signal.SIGTSTP, signal.SIGCONT):
                    self._old_handlers[sig] = signal.signal(sig, self._on_signal)

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

        from segwatch import __version__

        meta = dict(
            segwatch=__version__,
            run_dir=self.run_dir,
            supervisor_pid=os.getpid(),
            child_pid=None,
            socket=self.socket_path,
            status="starting",
            started=time.time(),
            ended=None,
            exit_code=None,
            script=os.path.abspath(self.script),
            argv=self.script_args,
            cwd=os.getcwd(),
            config=os.path.abspath(self.config_path) if self.config_path else None,
            config_resolved=corelink.config_to_dict(self.config),
            policy={"on_collapse": self.on_collapse, "on_nonfinite": self.on_nonfinite},
            headless=self.headless,
            lang=self.lang,
            shim=self.use_shim,
        )
        if self.dist is not None:
            meta["dist"] = self.dist.to_dict()
        if tcp_addr:
            meta.update(tcp=tcp_addr, token=self.token)
        self.store.write_meta(**meta)

    def _child_command(self) -> list[str]:
        if self.command:
            return self.command
        if self.dist is not None:
            from .dist import torchrun_command

            return torchrun_command(self.dist, self.script, self.script_args, shim=self.use_shim)
        if self.use_shim:
            return [sys.executable, "-m", "segwatch.shim", self.script, *self.script_args]
        return [sys.executable, self.script, *self.script_args]

    def _child_env(self) -> dict:
        env = os.environ.copy()
        env.update(self.extra_env)
        env["SEGWATCH_SOCKET"] = self.socket_path or ""
        env["SEGWATCH_RUN_DIR"] = self.run_dir
        cfg = corelink.config_to_dict(self.config)
        if cfg is not None:
            env["SEGWATCH_CONFIG"] = json.dumps(cfg)
        if self.debug:
            env["SEGWATCH_DEBUG"] = "1"
        if self.dist is not None:
            from .dist import PAUSE_ENV, clear_pause, pause_path

            clear_pause(self.run_dir)
            env[PAUSE_ENV] = pause_path(self.run_dir)
        env.setdefault("PYTHONUNBUFFERED", "1")  # so printed lines (mIoU) arrive as they are printed
        # Make `python -m segwatch.shim` importable even from an uninstalled checkout.
        pkg_parent = str(Path(__file__).resolve().parents[2])
        pp = env.get("PYTHONPATH", "")
        if pkg_parent not in pp.split(os.pathsep):
            env["PYTHONPATH"] = pp + (os.pathsep if pp else "") + pkg_parent
        return env

    def _open_output_files(self) -> dict[str, int] | None:
        """The child's stdout/stderr: RUN_DIR/stdout.log and stderr.log, opened here (append,
        0600) and handed to the child as its fds 1 and 2, so that its output never depends on
        us: if the supervisor dies, the training keeps printing into the files. We tail them
        through our own read-only fds. None when the run dir cannot hold them (then pipes)."""
        writers: dict[str, int] = {}
        try:
            for name in ("stdout", "stderr"):
                path = self.store.log_path(name)
                writers[name] = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
                self._tails[name] = os.open(path, os.O_RDONLY)
                os.lseek(self._tails[name], 0, os.SEEK_END)
            return writers
        except OSError:
            for fd in [*writers.values(), *self._tails.values()]:
                try:
                    os.close(fd)
                except OSError:
                    pass
            self._tails.clear()
            return None

    def _launch(self) -> None:
        self._emit(make_event("status", status="starting", pid=None, exit_code=None))
        cmd = self._child_command()
        writers = self._open_output_files()
        try:
            self.child = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=writers["stdout"] if writers else subprocess.PIPE,
                stderr=writers["stderr"] if writers else subprocess.PIPE,
                start_new_session=True,
                env=self._child_env(),
            )
        finally:
            for fd in (writers or {}).values():
                os.close(fd)
        self.tree = ProcessTree(self.child.pid)
        self._gpu = GpuMemProbe().start()
        self._nvml = NvmlSampler() if self._nvml is None else self._nvml
        if not writers:
            self._say(f"{PREFIX} cannot create stdout.log/stderr.log in the run directory; "
                      "the training's output goes through segwatch (it would stop if segwatch died)")
            for name, pipe in (("stdout", self.child.stdout), ("stderr", self.child.stderr)):
                fd = pipe.fileno()
                os.set_blocking(fd, False)
                self._pipes[fd] = (name, pipe)
                self._sel.register(fd, selectors.EVENT_READ, ("pipe", name))
        self.store.write_meta(child_pid=self.child.pid, status="running", command=cmd)
        self._set_status("running", pid=self.child.pid)

    # ------------------------------------------------------------------ loop
    def _loop(self) -> None:
        next_proc = time.monotonic() + min(0.5, self.proc_interval)
        next_status = time.monotonic() + self.interval
        while True:
            now = time.monotonic()
            timeout = min(next_proc, next_status if self.headless else next_proc) - now
            if self._killing:
                timeout = min(timeout, self._kill_deadline - now)
            timeout = max(0.0, min(timeout, 0.1))
            for key, mask in self._sel.select(timeout):
                kind, data = key.data
                if kind == "pipe":
                    self._read_pipe(key.fd)
                elif kind == "listen":
                    self._accept(key.fileobj, data)
                elif kind == "conn":
                    if mask & selectors.EVENT_WRITE:
                        self._writable(key.fd)
                    if mask & selectors.EVENT_READ:
                        self._read_conn(key.fd)
                elif kind == "wake":
                    try:
                        while os.read(self._wake_r, 512):
                            pass
                    except (BlockingIOError, InterruptedError):
                        pass
            while self._signals:
                self._handle_signal(self._signals.pop(0))
            self._poll_tails()

            now = time.monotonic()
            self._script_metrics(self._miou.due(now))
            if self._echo_since:
                self._echo_flush()
            if self._killing and now >= self._kill_deadline:
                self._escalate()
            if self._exited_at is None and self.child.poll() is not None:
                self._exited_at = now
                self.exit_code = exit_status(self.child.returncode)
            if now >= next_proc and self._exited_at is None:
                # a stopped tree changes little: sample it less often
                next_proc = now + (max(self.proc_interval, 10.0) if self._paused else self.proc_interval)
                self._sample_proc()
            if self.headless and now >= next_status:
                next_status = now + self.interval
                if self._exited_at is None:
                    if not self._paused:
                        line = self._status_lines.next(self.state, self.status, self.lang)
                        if line:
                            self._say(line)
                    elif now - self._paused_note >= PAUSED_REMINDER:
                        self._paused_note = now
                        self._say(status_line(self.state, self.status, self.lang)
                                  + tr("resume_hint", self.lang, run=self.run_dir))
            if self._exited_at is not None:
                pipes_open = bool(self._pipes)
                shim_open = any(c.shim for c in self._conns.values())
                if (not pipes_open and not shim_open) or now - self._exited_at > DRAIN_AFTER_EXIT:
                    return

    def _on_signal(self, signum: int, frame: Any) -> None:
        self._signals.append(signum)

    def _handle_signal(self, signum: int) -> None:
        if self._exited_at is not None:
            return
        if signum in (signal.SIGTSTP, signal.SIGCONT):
            self._job_control(signum)
            return
        name = signal.Signals(signum).name
        self._killed_by = self._killed_by or "user"
        if signum == signal.SIGINT and self._killing is None:
            self._say(f"{PREFIX} " + tr("stopping_force", self.lang, sig=name))
            self._record_action("kill", None, by="user", reason=name)
            self._killing = "interrupt"
            self._kill_deadline = time.monotonic() + self.interrupt_timeout
            if self._paused:
                self._tree_resume()
                self._paused = False
            self.tree.send(signal.SIGINT)
        elif self._killing in (None, "interrupt"):
            if self._killing is None:
                self._say(f"{PREFIX} " + tr("stopping", self.lang, sig=name))
                self._record_action("kill", None, by="user", reason=name)
            self._start_term()
        else:
            self._escalate()

    def _job_control(self, signum: int) -> None:
        if signum == signal.SIGTSTP:
            if self._killing is None and not self._paused:
                self._pause(None, by="user", quiet=True)
                self._tstp_paused = True
            self._say(f"{PREFIX} " + tr("suspended", self.lang))
            signal.signal(signal.SIGTSTP, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTSTP)   # stops here until SIGCONT
            signal.signal(signal.SIGTSTP, self._on_signal)
        elif signum == signal.SIGCONT and self._tstp_paused:
            self._tstp_paused = False
            if self._paused and self._killing is None:
                self._resume(by="user")

    def _start_term(self) -> None:
        self._killing = "term"
        self._kill_deadline = time.monotonic() + self.kill_timeout
        self._paused = False
        if self.dist is not None:
            self._tree_resume()
        if self.tree is not None:
            self.tree.terminate(signal.SIGTERM)

    def _escalate(self) -> None:
        if self._killing == "interrupt":
            self._start_term()
        elif self._killing == "term":
            self._killing = "kill"
            self._kill_deadline = time.monotonic() + 3600
            if self.tree is not None:
                self.tree.kill()
        else:
            if self.tree is not None:
                self.tree.kill()
            self._kill_deadline = time.monotonic() + 3600

    # ------------------------------------------------------------------ child output
    def _poll_tails(self, limit: int = 4 << 20) -> None:
        """Read what the child appended to stdout.log / stderr.log since the last call (at
        most ``limit`` bytes per stream, so a flood cannot starve the sockets)."""
        for name, fd in self._tails.items():
            got = 0
            while got < limit:
                try:
                    data = os.read(fd, 65536)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:
                    break
                if not data:
                    break
                got += len(data)
                self._child_output(name, data)

    def _close_tails(self) -> None:
        """The last of the output files (after the child's tree is gone): read to the end,
        the pending partial lines become events."""
        self._poll_tails(limit=1 << 62)
        for name, fd in list(self._tails.items()):
            try:
                os.close(fd)
            except OSError:
                pass
            self._end_stream(name)
        self._tails.clear()

    def _end_stream(self, name: str) -> None:
        if self.echo and self._echo_pending[name]:
            self._echo_write(name, bytes(self._echo_pending[name]))
            self._echo_pending[name].clear()
            self._echo_since.pop(name, None)
        rest = bytes(self._partial[name])
        self._partial[name].clear()
        if rest:
            self._output_line(name, rest)

    def _read_pipe(self, fd: int) -> None:
        name, pipe = self._pipes[fd]
        try:
            data = os.read(fd, 65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._sel.unregister(fd)
            del self._pipes[fd]
            self._end_stream(name)
            try:
                pipe.close()
            except OSError:
                pass
            return
        try:
            self.store.log_output(name, data)
        except OSError:
            pass
        self._child_output(name, data)

    def _child_output(self, name: str, data: bytes) -> None:
        """A piece of the child's output (from its log file, or the fallback pipe): echo it
        (headless) and cut it into ``output`` events."""
        if self.echo:
            self._echo(name, data)
        buf = self._partial[name]
        buf.extend(data)
        while True:
            # tqdm-style progress bars end their updates with \r: treat it as a line end too
            m = _EOL.search(buf)
            if m is None:
                while len(buf) > MAX_OUTPUT_LINE:
                    line = bytes(buf[:MAX_OUTPUT_LINE])
                    del buf[:MAX_OUTPUT_LINE]
                    self._output_line(name, line)
                break
            line = bytes(buf[: m.start()])
            del buf[: m.start() + 1]
            if line.strip():
                self._output_line(name, line)

    def _echo(self, name: str, data: bytes) -> None:
        """Pass child output through to our stdout/stderr, whole lines at a time (a line end
        is \n or \r), so segwatch's own lines on stderr never land inside a child's line; a
        partial line is held at most ECHO_HOLD seconds (then written as it is)."""
        pend = self._echo_pending[name]
        pend.extend(data)
        cut = max(pend.rfind(b"\n"), pend.rfind(b"\r"))
        if cut < 0:
            if len(pend) < 65536:
                self._echo_since.setdefault(name, time.monotonic())
                return
            cut = len(pend) - 1
        self._echo_write(name, bytes(pend[: cut + 1]))
        del pend[: cut + 1]
        if pend:
            self._echo_since[name] = time.monotonic()
        else:
            self._echo_since.pop(name, None)

    def _echo_flush(self, force: bool = False) -> None:
        now = time.monotonic()
        for name, since in list(self._echo_since.items()):
            if force or now - since >= ECHO_HOLD:
                pend = self._echo_pending[name]
                if pend:
                    self._echo_write(name, bytes(pend))
                    pend.clear()
                self._echo_since.pop(name, None)

    def _echo_write(self, name: str, data: bytes) -> None:
        dst = self._out if name == "stdout" else self._err
        if dst is None:
            return
        try:
            dst.write(data)
            dst.flush()
        except (OSError, ValueError):
            pass
        if data:
            self._line_open[name] = not data.endswith(b"\n")

    def _output_line(self, stream: str, raw: bytes) -> None:
        text = _ANSI.sub("", raw.decode("utf-8", "replace")).rstrip("\r\n")
        if not text.strip():
            return
        if len(text) > MAX_OUTPUT_LINE:
            text = text[:MAX_OUTPUT_LINE] + "…"
        self._emit(make_event("output", stream=stream, line=text))
        step = corelink.safe_int(getattr(self.state, "step", 0))
        self._script_metrics(self._miou.line(text, step, time.monotonic()))

    def _script_metrics(self, items: list[dict]) -> None:
        for fields in items:
            self._emit(make_event("script_metric", name="miou", source="output", rank=0, world_size=1, **fields))

    # ------------------------------------------------------------------ sockets
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

    # ------------------------------------------------------------------ events
    def _emit(self, ev: dict) -> None:
        """Store first, then diagnose, then act. Never raises for a bad event."""
        try:
            line = self.store.append(ev)
        except ProtocolError as exc:
            self._rejected_types += 1
            if len(self._proto_errors) < 10:
                self._proto_errors.append(str(exc))
            return
        except OSError as exc:
            # disk full, run dir removed...: the training goes on, viewers miss this event
            self._store_errors += 1
            if self._store_errors == 1:
                self._say(f"{PREFIX} cannot write to the run directory ({exc}); events are being lost")
            line = encode(ev)
        for conn in list(self._conns.values()):
            if conn.live:
                self._send(conn, line)
        new = self.state.ingest(ev)
        for finding in new:
            self._on_finding(finding)
        if self.dist is None:
            if ev.get("type") == "eval" and not ev.get("rank"):
                guide, mmseg = corelink.latest_eval_miou(self.state)
                self._script_metrics(self._miou.evaluation(guide, mmseg, time.monotonic()))
        else:
            # ranks' evaluations are merged in core once all of them arrived
            n = corelink.safe_int(getattr(self.state, "evals_total", 0))
            if n > self._evals_seen:
                self._evals_seen = n
                guide, mmseg = corelink.latest_eval_miou(self.state)
                self._script_metrics(self._miou.evaluation(guide, mmseg, time.monotonic()))

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

    def _tree_resume(self) -> None:
        if self.dist is not None:
            from .dist import clear_pause

            try:
                clear_pause(self.run_dir)
            except OSError:
                pass
        if self.tree is not None:
            self.tree.resume()   # also for a dist run: a rank stopped by anyone else goes on

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

    def _sample_proc(self) -> None:
        if self.tree is None:
            return
        try:
            sample = self.tree.sample(self._gpu)
        except Exception:
            return
        self._emit(make_event("proc", **sample))
        self._sample_gpus()

    def _sample_gpus(self) -> None:
        """One ``gpu`` event per proc sample, only when NVML sees a device."""
        if self._nvml is None or not self._nvml.available or self.tree is None:
            return
        try:
            fields = self._nvml.sample(p.pid for p in self.tree.members(scan_group=False))
        except Exception:
            return
        if fields is not None:
            self._emit(make_event("gpu", step=self.state.step, **fields))

    # ------------------------------------------------------------------ ending
    def _protocol_counts(self) -> dict:
        invalid = self._closed_conn_invalid + sum(c.decoder.invalid for c in self._conns.values())
        oversized = self._closed_conn_oversized + sum(c.decoder.oversized for c in self._conns.values())
        errors = list(self._proto_errors)
        for c in self._conns.values():
            errors.extend(c.decoder.errors)
        return {"invalid": invalid, "oversized": oversized, "rejected_types": self._rejected_types,
                "foreign": self._foreign, "unauthorized": self._unauthorized,
                "errors": errors[:10], "store_errors": self._store_errors}

    def _final_status(self) -> str:
        if self._killed_by is not None:
            return "killed"
        if self._crash is not None and self.exit_code != 0:
            return "failed"
        return "finished" if self.exit_code == 0 else "failed"

    def _finish(self) -> None:
        if self._finished:
            return
        self._finished = True
        if self._gpu is not None:
            self._gpu.stop()
        if self.dist is not None:
            self._tree_resume()
        # 1. the child's tree must be gone, whatever happened
        if self.child is not None:
            if self.child.poll() is None:
                self._killed_by = self._killed_by or ("user" if self._crash is None else "supervisor")
                try:
                    self.tree.terminate(signal.SIGTERM)
                    self.child.wait(timeout=self.kill_timeout)
                except subprocess.TimeoutExpired:
                    self.tree.kill()
                    try:
                        self.child.wait(timeout=5.0)
                    except subprocess.TimeoutExpired:
                        pass
                except Exception:
                    pass
            if self.exit_code is None:
                self.exit_code = exit_status(self.child.returncode)
            try:
                self.tree.cleanup(timeout=2.0)
            except Exception:
                pass
            self._drain(deadline=time.monotonic() + 1.5)
        else:
            if self.exit_code is None:
                self.exit_code = 1 if self._crash else 0
        try:
            self._script_metrics(self._miou.due(time.monotonic(), final=True))
        except Exception:
            pass
        # events the shim wrote to its fallback file while the socket was unreachable
        try:
            for ev in self.store.take_shim_fallback():
                self._emit(ev)
        except Exception:
            pass
        # 2. final status and the report
        status = self._final_status()
        signum = None
        if self.child is not None and self.child.returncode is not None and self.child.returncode < 0:
            signum = -self.child.returncode
        proto = self._protocol_counts()
        try:
            # the final status event; meta.json says it only once the report is written below,
            # so whoever sees a final status in meta.json finds report.json there
            self.status = status
            self._emit(make_event("status", status=status, pid=self.child.pid if self.child else None,
                                  exit_code=self.exit_code, signal=signum, invalid_lines=proto["invalid"]))
        except Exception:
            pass
        report = self.build_report(proto)
        try:
            self.written = self.store.write_report(report, self.report_path)
        except Exception as exc:
            self._say(f"{PREFIX} could not write the report: {exc}")
        try:
            self.store.write_meta(status=status, ended=time.time(), exit_code=self.exit_code,
                                  protocol=proto, report=str(self.store.report_path))
        except Exception:
            pass
        if self.headless:
            self._say(status_line(self.state, status, self.lang))
            where = self.report_path or str(self.store.report_path)
            word = status if self.lang == "en" else status_word(status, self.lang)
            self._say(f"{PREFIX} " + tr("final", self.lang, status=word, code=self.exit_code, run=self.run_dir,
                                        report=where))
        # 3. close everything
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
        if self._old_handlers:
            for sig, h in self._old_handlers.items():
                try:
                    signal.signal(sig, h)
                except Exception:
                    pass
            try:
                signal.set_wakeup_fd(self._old_wakeup if self._old_wakeup is not None else -1)
            except Exception:
                pass
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        if self._sel is not None:
            try:
                self._sel.close()
            except Exception:
                pass
        self.store.close()

    def _drain(self, deadline: float) -> None:
        """Read what is left in the child's pipes and the shim's connections (non-blocking,
        bounded: a stray process holding a pipe open cannot hang the ending)."""
        if self._sel is None:
            return
        while (self._pipes or any(c.shim for c in self._conns.values())) and time.monotonic() < deadline:
            events = self._sel.select(max(0.0, min(0.1, deadline - time.monotonic())))
            self._poll_tails()
            for key, mask in events:
                kind, data = key.data
                if kind == "pipe":
                    self._read_pipe(key.fd)
                elif kind == "conn":
                    if mask & selectors.EVENT_WRITE:
                        self._writable(key.fd)
                    if mask & selectors.EVENT_READ:
                        self._read_conn(key.fd)
        self._close_tails()
        for name, buf in self._partial.items():
            if buf:
                rest = bytes(buf)
                buf.clear()
                self._output_line(name, rest)
        self._echo_flush(force=True)

    def build_report(self, proto: dict | None = None) -> dict:
        report = self.state.report(self.exit_code)
        finalize_report(report, exit_code=self.exit_code, status=self._final_status(),
                        script=os.path.abspath(self.script), run_dir=self.run_dir, actions=self.actions)
        sup = {"protocol": proto or self._protocol_counts(), "state_errors": self.state.errors}
        if self.state.error_messages:
            sup["state_error_messages"] = self.state.error_messages
        if self._crash:
            sup["internal_error"] = self._crash.splitlines()[-1]
        report["supervisor"] = sup
        return report

    # ------------------------------------------------------------------ output
    def _say(self, text: str) -> None:
        """A line of segwatch's own on stderr (headless), or the daemon's log."""
        dst = self._err
        if dst is None:
            return
        if self._line_open["stderr"] or (self._line_open["stdout"] and same_terminal(self._out, dst)):
            text = "\n" + text  # start on a fresh line, not glued to the child's open line
            self._line_open["stderr"] = self._line_open["stdout"] = False
        try:
            dst.write((text + "\n").encode("utf-8", "replace"))
            dst.flush()
        except (OSError, ValueError):
            pass
