"""The child's output: its stdout/stderr files (or pipes) tailed, echoed whole lines at a
time (headless), cut into ``output`` events, and the script's printed mIoU read from them;
segwatch's own lines (``_say``) kept off a child's unfinished line.

Part of ``Supervisor`` (a room of it, see supervisor.py): the methods here share its state.
"""
from __future__ import annotations

import os
import re
import time
from typing import Any

from segwatch.protocol import make_event
from segwatch.runs import corelink

from .headless import StatusLines, same_terminal
from .miou_parse import MiouResolver

_EOL = re.compile(rb"[\r\n]")
_ANSI = re.compile(r"\x1b(?:\[[0-9;?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[@-Z\\-_])")  # colours, cursor moves, titles
MAX_OUTPUT_LINE = 8192      # longer child output lines are cut in the event (the .log keeps all)
ECHO_HOLD = 0.2            # seconds a partial child output line is held before it is echoed anyway


class OutputRoom:
    """Output capture of the ``Supervisor``."""

    def _init_output(self) -> None:
        self._pipes: dict[int, tuple[str, Any]] = {}   # only when the output files cannot be made
        self._tails: dict[str, int] = {}                 # read fds on stdout.log / stderr.log
        self._partial: dict[str, bytearray] = {"stdout": bytearray(), "stderr": bytearray()}
        self._echo_pending: dict[str, bytearray] = {"stdout": bytearray(), "stderr": bytearray()}
        self._echo_since: dict[str, float] = {}
        # the child's last echoed byte per stream was not a newline (a tqdm bar left open)
        self._line_open: dict[str, bool] = {"stdout": False, "stderr": False}
        self._status_lines = StatusLines()
        self._miou = MiouResolver()

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
