"""The run directory (``RunDir`` reads it, ``RunStore`` writes it): meta.json, the append-only event log, child output, the report.

Layout of ``RUN_DIR`` (directory mode 0700, every file 0600):

    meta.json           who/what/where: supervisor_pid, child_pid, socket, status, started, ended, ...
    events.jsonl        every event, in the order the supervisor handled it (append-only)
    events.shim.jsonl   the shim's fallback log, written only when the socket was gone
    stdout.log          the child's stdout, byte for byte
    stderr.log          the child's stderr, byte for byte
    supervisor.log      the supervisor's own stdio when it runs as a daemon
    report.json         the run report, once the run has ended
    sock                the Unix socket (when the path is short enough; see ``socket_path_for``)

``events.jsonl`` is the stream: live viewers tail it, ``replay`` reads it, ``relay``
forwards it. The supervisor writes an event there (and flushes) before it acts on it.
"""
from __future__ import annotations

import hashlib
import json
import os
import stat
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

from segwatch.protocol import MAX_LINE_BYTES, LineDecoder, ProtocolError, decode, encode, read_events

#: Statuses after which nothing more happens in a run.
FINAL_STATUSES = ("finished", "killed", "failed", "lost")

#: Longest Unix socket path we use (sun_path is 108 bytes on Linux, including the NUL).
MAX_SOCKET_PATH = 100

EVENTS = "events.jsonl"
SHIM_EVENTS = "events.shim.jsonl"
META = "meta.json"
REPORT = "report.json"
SUPERVISOR_LOG = "supervisor.log"
#: The child's raw output, one log file each (``stdout.log``, ``stderr.log``).
OUTPUT_STREAMS = ("stdout", "stderr")


def _write_private(path: Path, data: bytes) -> None:
    """Write a file atomically with mode 0600 (temp file in the same dir + rename)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=str(path.parent))
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def write_json_private(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically, mode 0600."""
    _write_private(Path(path), (json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n").encode())


def _private_dir(path: Path) -> Path:
    """Create (or check) a directory that only we can enter; refuse one owned by someone else."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
        raise OSError(f"{path} is not a directory owned by this user")
    if stat.S_IMODE(st.st_mode) != 0o700:
        os.chmod(path, 0o700)
    return path


def socket_path_for(run_dir: str | os.PathLike) -> str:
    """Where the run's Unix socket lives.

    ``RUN_DIR/sock`` when that absolute path fits in ``MAX_SOCKET_PATH`` bytes; otherwise a
    name hashed from the run dir in a private (0700) directory: ``$XDG_RUNTIME_DIR/segwatch/``
    when that variable is set and usable, else ``/tmp/segwatch-<uid>/``.
    """
    run_dir = Path(run_dir).resolve()
    direct = run_dir / "sock"
    if len(os.fsencode(str(direct))) <= MAX_SOCKET_PATH:
        return str(direct)
    digest = hashlib.sha256(os.fsencode(str(run_dir))).hexdigest()[:16]
    candidates = []
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and os.path.isabs(xdg):
        candidates.append(Path(xdg) / "segwatch")
    candidates.append(Path("/tmp") / f"segwatch-{os.getuid()}")
    for base in candidates:
        path = base / f"{digest}.sock"
        if len(os.fsencode(str(path))) > MAX_SOCKET_PATH:
            continue
        try:
            _private_dir(base)
        except OSError:
            continue
        return str(path)
    raise OSError(f"no usable directory for the socket of {run_dir}")


#: Bytes read from events.jsonl at a time.
READ_CHUNK = 1 << 20


def decode_lines(data: bytes, counter: LineDecoder) -> list[dict]:
    """The events in ``data``, counted in ``counter`` exactly as ``counter.feed(data)`` would
    count them (the same invalid lines, oversized lines and reasons), but without its
    per-line buffer copies: a replay of a long run decodes tens of thousands of lines.
    A partial line at the end of ``data`` stays in ``counter`` for the next call."""
    if counter._buf or counter._skipping:
        # finish the line left over from the previous chunk the decoder's own way
        nl = data.find(b"\n")
        if nl < 0:
            return list(counter.feed(data))
        out = list(counter.feed(data[: nl + 1]))
        data = data[nl + 1:]
    else:
        out = []
    end = data.rfind(b"\n")
    if end < 0:
        out.extend(counter.feed(data))
        return out
    append = out.append
    for line in data[:end].split(b"\n"):
        if len(line) > MAX_LINE_BYTES or not line.strip():
            out.extend(counter.feed(line + b"\n"))   # rare: the decoder's own handling
            continue
        try:
            append(decode(line))
        except ProtocolError as exc:
            counter.invalid += 1
            if len(counter.errors) < 10:
                counter.errors.append(str(exc))
    if end + 1 < len(data):
        out.extend(counter.feed(data[end + 1:]))
    return out


class RunDir:
    """One run directory, read side: what a viewer, a replay, a report or a listing needs.

    ``RunDir(path)`` raises ``FileNotFoundError`` when ``path`` is not a directory. Reads
    never create anything; a directory being written by a live supervisor reads fine (the
    events are appended line by line, meta.json is replaced atomically)."""

    def __init__(self, run_dir: str | os.PathLike) -> None:
        self.path = Path(run_dir).expanduser().absolute()
        if not self.path.is_dir():
            raise FileNotFoundError(f"no run directory at {self.path}")
        self._set_paths()

    def _set_paths(self) -> None:
        self.events_path = self.path / EVENTS
        self.shim_events_path = self.path / SHIM_EVENTS
        self.meta_path = self.path / META
        self.report_path = self.path / REPORT
        self.supervisor_log_path = self.path / SUPERVISOR_LOG

    @property
    def name(self) -> str:
        return self.path.name

    # ---- reading -------------------------------------------------------------------
    def has_run(self) -> bool:
        """True when a run has been recorded here (meta.json or events.jsonl exists)."""
        return self.meta_path.exists() or self.events_path.exists()

    def has_meta(self) -> bool:
        return self.meta_path.is_file()

    def read_meta(self) -> dict:
        try:
            with open(self.meta_path, "rb") as fh:
                return json.loads(fh.read() or b"{}")
        except FileNotFoundError:
            return {}
        except ValueError:
            return {}

    def meta(self) -> dict:
        """meta.json as a dict ({} when missing or unreadable)."""
        return self.read_meta()

    def status(self) -> str:
        """The run's status from meta.json, ``lost`` when its supervisor is gone."""
        return effective_status(self.read_meta())

    def read_report(self) -> dict | None:
        try:
            with open(self.report_path, "rb") as fh:
                return json.loads(fh.read())
        except (FileNotFoundError, ValueError):
            return None

    def log_path(self, stream: str) -> Path:
        """Where the child's raw ``stdout``/``stderr`` output is logged."""
        if stream not in OUTPUT_STREAMS:
            raise ValueError(f"unknown stream {stream!r}")
        return self.path / f"{stream}.log"

    def read_log(self, stream: str) -> bytes | None:
        """The child's raw ``stdout``/``stderr`` output (``None`` when there is no log)."""
        try:
            return self.log_path(stream).read_bytes()
        except (FileNotFoundError, IsADirectoryError):
            return None

    def events(self, counter: LineDecoder | None = None) -> Iterator[dict]:
        """Every stored event: events.jsonl in order, then the shim's fallback file (if any)."""
        counter = counter if counter is not None else LineDecoder()
        for path in (self.events_path, self.shim_events_path):
            if path.exists():
                with open(path, "rb") as fh:
                    for chunk in iter(lambda: fh.read(READ_CHUNK), b""):
                        yield from decode_lines(chunk, counter)
                    yield from counter.feed(b"\n")   # a last line without its newline

    def open_events(self):
        """events.jsonl opened for reading (binary, from its start): for a reader that keeps
        its own position, such as a subscriber catching up. Raises FileNotFoundError."""
        return open(self.events_path, "rb")

    def shim_events(self, counter: LineDecoder | None = None) -> list[dict]:
        """The shim's fallback file alone (events written while the socket was gone)."""
        if not self.shim_events_path.exists():
            return []
        with open(self.shim_events_path, "rb") as fh:
            return list(read_events(fh, counter))

    def tail(self):
        """A live follower of this run's events (see ``segwatch.runs.tail.RunTail``)."""
        from .tail import RunTail

        return RunTail(self)

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return f"{type(self).__name__}({str(self.path)!r})"


class RunStore(RunDir):
    """One run directory, write side (the supervisor). ``create=True`` makes it (0700);
    ``create=False`` opens an existing one."""

    def __init__(self, run_dir: str | os.PathLike, create: bool = True) -> None:
        self.path = Path(run_dir).absolute()
        if create:
            _private_dir(self.path)
        elif not self.path.is_dir():
            raise FileNotFoundError(f"no run directory at {self.path}")
        self._set_paths()
        self._events_fh = None
        self._logs: dict[str, Any] = {}
        self._meta: dict[str, Any] = {}
        self.appended = 0

    # ---- writing -------------------------------------------------------------------
    def _open_append(self, name: str):
        fd = os.open(self.path / name, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        return os.fdopen(fd, "ab", buffering=0)

    def append(self, event: dict) -> bytes:
        """Append one event to events.jsonl (unbuffered: it is on disk when this returns)."""
        line = encode(event)
        if self._events_fh is None:
            self._events_fh = self._open_append(EVENTS)
        self._events_fh.write(line)
        self.appended += 1
        return line

    def log_output(self, stream: str, data: bytes) -> None:
        """Append raw child output to stdout.log / stderr.log."""
        fh = self._logs.get(stream)
        if fh is None:
            fh = self._logs[stream] = self._open_append(self.log_path(stream).name)
        fh.write(data)

    def write_meta(self, **fields: Any) -> dict:
        """Merge ``fields`` into meta.json (atomic rewrite, mode 0600); returns the whole meta."""
        if not self._meta and self.meta_path.exists():
            self._meta = self.read_meta()
        self._meta.update(fields)
        write_json_private(self.meta_path, self._meta)
        return dict(self._meta)

    def write_report(self, report: dict, extra_path: str | os.PathLike | None = None) -> list[str]:
        """Write RUN_DIR/report.json and, if given, a copy at ``extra_path``. Returns the paths written."""
        written = []
        write_json_private(self.report_path, report)
        written.append(str(self.report_path))
        if extra_path:
            extra = Path(extra_path)
            if extra.parent and not extra.parent.exists():
                extra.parent.mkdir(parents=True, exist_ok=True)
            write_json_private(extra, report)
            written.append(str(extra.absolute()))
        return written

    def take_shim_fallback(self) -> list[dict]:
        """The shim's fallback events (written while the socket was unreachable), to be
        appended to events.jsonl by the supervisor at the end of a run. The file is renamed
        to ``events.shim.jsonl.merged`` so that a replay does not count them twice."""
        if not self.shim_events_path.exists():
            return []
        events = self.shim_events()
        os.replace(self.shim_events_path, self.path / (SHIM_EVENTS + ".merged"))
        return events

    def close(self) -> None:
        for fh in [self._events_fh, *self._logs.values()]:
            if fh is not None:
                try:
                    fh.close()
                except OSError:
                    pass
        self._events_fh = None
        self._logs = {}


def pid_alive(pid: Any, born_before: float | None = None) -> bool:
    """True when ``pid`` names a running (not zombie) process; with ``born_before`` (unix
    time), only if that process already existed then (a reused pid is not ours)."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        import psutil

        p = psutil.Process(pid)
        if born_before is not None and p.create_time() > born_before + 1.0:
            return False
        return p.status() != psutil.STATUS_ZOMBIE
    except Exception:
        return False


def effective_status(meta: dict) -> str:
    """The run's status, or ``lost`` when meta says it is live but its supervisor is gone."""
    status = meta.get("status") or "unknown"
    started = meta.get("started") if isinstance(meta.get("started"), (int, float)) else None
    if status not in FINAL_STATUSES and meta.get("supervisor_pid") and not pid_alive(meta.get("supervisor_pid"),
                                                                                     started):
        return "lost"
    return status


def now() -> float:
    return time.time()
