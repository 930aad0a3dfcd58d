"""The supervisor: runs the training script under the shim and watches it.

``Supervisor`` is the orchestrator (setup, the loop, ``_emit``, the ending); its rooms are
mixins over the same state, one module each:

    server.py   sockets, connections, control commands, subscribers (``ServerRoom``)
    child.py    the child's process tree: launch, signals, stopping it, samples (``ChildRoom``)
    output.py   the child's output: tails, echo, ``output`` events, printed mIoU (``OutputRoom``)
    policy.py   policies and actions: pause, resume, kill, ``status`` (``PolicyRoom``)

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

import os
import selectors
import sys
import time
import traceback
from typing import Any, BinaryIO, Sequence

from segwatch.protocol import ProtocolError, encode, make_event
from segwatch.runs import RunStore, corelink, finalize_report

from .child import ChildRoom
from .headless import PREFIX, status_line, status_word, tr
from .output import OutputRoom
from .policy import COLLAPSE_FINDINGS, NONFINITE_FINDINGS, POLICIES, PolicyRoom  # noqa: F401 (public names)
from .process import exit_status
from .server import ServerRoom

PAUSED_REMINDER = 60.0     # seconds between headless reminders that the run is paused
DRAIN_AFTER_EXIT = 3.0      # seconds to collect the shim's last events after the child exited


class Supervisor(ServerRoom, ChildRoom, OutputRoom, PolicyRoom):
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

        self._init_policy(config, on_collapse, on_nonfinite)

        self.store = RunStore(run_dir)
        self.run_dir = str(self.store.path)
        self.state = corelink.SafeState(config, lang)
        self.exit_code: int | None = None
        self.status = "starting"
        self.written: list[str] = []
        self._sel: selectors.BaseSelector | None = None
        self._wake_r = self._wake_w = -1
        self._store_errors = 0
        self._crash: str | None = None
        self._finished = False
        self._evals_seen = 0
        self._init_server()
        self._init_child()
        self._init_output()

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

    def _setup(self) -> None:
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._sel.register(self._wake_r, selectors.EVENT_READ, ("wake", None))

        self._install_signals()
        tcp_addr = self._open_listeners()

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
                elif kind == "exit":
                    self._close_exit_fd()   # the child.poll() below reaps it
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
                shim_open = any(self._may_hold_events(c) for c in self._conns.values())
                if (not pipes_open and not shim_open) or now - self._exited_at > DRAIN_AFTER_EXIT:
                    return

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
        self._broadcast(line)
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
            self._stop_tree()
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
        self._close_exit_fd()
        self._close_server()
        self._restore_signals()
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
        while (self._pipes or any(self._may_hold_events(c) for c in self._conns.values())) \
                and time.monotonic() < deadline:
            events = self._sel.select(max(0.0, min(0.1, deadline - time.monotonic())))
            self._poll_tails()
            for key, mask in events:
                kind, data = key.data
                if kind == "exit":
                    self._close_exit_fd()
                elif kind == "pipe":
                    self._read_pipe(key.fd)
                elif kind == "listen":
                    # a connection still in the backlog: a short training may have written
                    # everything and exited before the loop accepted it
                    self._accept(key.fileobj, data)
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
