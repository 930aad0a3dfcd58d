"""The wire format between the shim, the supervisor and every viewer.

One event is one JSON object on one line (newline-delimited JSON). The same lines
travel over the supervisor's socket, are appended to ``events.jsonl`` in the run
directory, are streamed by ``segwatch relay`` over SSH, and are read back by
``segwatch replay``. Nothing here imports torch or textual.

Every event carries ``v`` (protocol version), ``type`` and ``t`` (unix time). The
fields of each type are listed in ``EVENT_FIELDS`` (required ones) and described in
docs/EVENTS.md. Unknown extra fields are kept (forward compatibility); a missing
required field, a wrong type, an unknown event type, a line that is not JSON or
a line over ``MAX_LINE_BYTES`` is rejected with ``ProtocolError`` and the caller
counts it: garbled input is never fatal.
"""
from __future__ import annotations

import json
import math
import time
from typing import Any, Iterable, Iterator

VERSION = 1

#: Longest accepted line, in bytes (a 150x150 confusion matrix of int64 counts is ~400 KB).
MAX_LINE_BYTES = 1 << 20

# Events written by the shim (inside the training process).
SHIM_TYPES = (
    "hello",       # process identity, resolved config, torch/device facts
    "model",       # the root model (and logits site) that the shim hooked
    "batch",       # statistics of one DataLoader batch: labels and inputs
    "preds",       # statistics of one forward's logits: predicted classes (and GT at that size)
    "step",        # one training step: loss, gradient norms, LR, optimizer facts
    "eval",        # one finished (or aborted) evaluation pass, with its whole confusion matrix
    "state_dict",  # a load_state_dict call: missing / unexpected key counts
    "lossfn",      # the loss function and its configuration (once, and when it changes)
    "probe",       # a hook that raised and disabled itself, or a note from the shim
    "overhead",    # the shim's measured share of step time and its sampling intervals
    "script_metric",  # an mIoU the script itself reported (parsed from its output, or an adapter)
    "bye",         # the shim is shutting down: totals, drops
)
# Events written by the supervisor (and by viewers' controllers).
SUPERVISOR_TYPES = (
    "output",   # one line of the child's stdout/stderr
    "status",   # run status changes: running / paused / finished / killed / failed
    "action",   # a pause / resume / kill, by policy or by a user
    "finding",  # a finding first raised (mirror of core's diagnosis, for external readers)
    "proc",     # CPU / RSS of the child's process tree
    "gpu",      # per-GPU utilization / VRAM / temperature / power (NVML), same cadence as proc
    "control",  # a command to the supervisor (pause / resume / kill / subscribe)
    "ack",      # the supervisor's answer to a control command
)
EVENT_TYPES = SHIM_TYPES + SUPERVISOR_TYPES

_NUM = (int, float)
# Required fields and their accepted types. Optional fields are documented in docs/EVENTS.md.
EVENT_FIELDS: dict[str, dict[str, tuple[type, ...]]] = {
    "hello": {"pid": (int,)},
    "model": {"step": (int,)},
    "batch": {"step": (int,), "phase": (str,)},
    "preds": {"step": (int,), "phase": (str,)},
    "step": {"step": (int,)},
    "eval": {"step": (int,)},
    "state_dict": {"step": (int,)},
    "lossfn": {"step": (int,)},
    "probe": {"name": (str,)},
    "overhead": {"step": (int,), "share": _NUM},
    "script_metric": {"name": (str,), "value": _NUM},
    "bye": {"step": (int,)},
    "output": {"stream": (str,), "line": (str,)},
    "status": {"status": (str,)},
    "action": {"kind": (str,)},
    "finding": {"id": (str,), "severity": (str,)},
    "proc": {},
    "gpu": {},
    "control": {"cmd": (str,)},
    "ack": {"ok": (bool,)},
}

PHASES = ("train", "val")
STATUSES = ("starting", "running", "paused", "finished", "killed", "failed", "lost")
CONTROL_COMMANDS = ("pause", "resume", "kill", "subscribe", "ping")


class ProtocolError(ValueError):
    """A line or object that is not a valid event."""


def make_event(type_: str, **fields: Any) -> dict:
    """Build an event dict with the envelope filled in."""
    ev = {"v": VERSION, "type": type_, "t": fields.pop("t", None) or time.time()}
    ev.update(fields)
    return ev


def _clean(obj: Any) -> Any:
    """Make floats JSON-safe: NaN/Inf become the strings 'nan', 'inf', '-inf'.

    JSON has no NaN; a non-finite loss is exactly what we must transport, so it is
    encoded as a string and decoded back by ``as_float``.
    """
    if isinstance(obj, float):
        if math.isfinite(obj):
            return obj
        return "nan" if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def as_float(value: Any) -> float | None:
    """Decode a number that may have been sent as 'nan' / 'inf' / '-inf'."""
    if value is None:
        return None
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, _NUM):
        return float(value)
    if isinstance(value, str) and value in ("nan", "inf", "-inf"):
        return float(value)
    raise ProtocolError(f"not a number: {value!r}")


def encode(event: dict) -> bytes:
    """One event as one UTF-8 line ending in ``\\n``. Raises ProtocolError if too long."""
    line = json.dumps(_clean(event), separators=(",", ":"), allow_nan=False).encode() + b"\n"
    if len(line) > MAX_LINE_BYTES:
        raise ProtocolError(f"event of type {event.get('type')!r} is {len(line)} bytes (limit {MAX_LINE_BYTES})")
    return line


def validate(obj: Any) -> dict:
    """Check an already-parsed object; return it, or raise ProtocolError."""
    if not isinstance(obj, dict):
        raise ProtocolError("event is not a JSON object")
    v = obj.get("v")
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        raise ProtocolError("missing or invalid protocol version 'v'")
    if v > VERSION:
        raise ProtocolError(f"protocol version {v} is newer than this segwatch ({VERSION})")
    type_ = obj.get("type")
    if type_ not in EVENT_FIELDS:
        raise ProtocolError(f"unknown event type {type_!r}")
    t = obj.get("t")
    if not isinstance(t, _NUM) or isinstance(t, bool):
        raise ProtocolError("missing or invalid timestamp 't'")
    for name, types in EVENT_FIELDS[type_].items():
        val = obj.get(name)
        if val is None or isinstance(val, bool) and bool not in types or not isinstance(val, types):
            raise ProtocolError(f"{type_} event: field {name!r} missing or not {'/'.join(t.__name__ for t in types)}")
    return obj


def decode(line: bytes | str) -> dict:
    """Parse and validate one line. Raises ProtocolError for anything that is not a valid event."""
    if isinstance(line, str):
        line = line.encode("utf-8", "replace")
    if len(line) > MAX_LINE_BYTES:
        raise ProtocolError(f"line of {len(line)} bytes exceeds the limit of {MAX_LINE_BYTES}")
    try:
        obj = json.loads(line)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"not JSON: {exc}") from None
    return validate(obj)


class LineDecoder:
    """Splits a byte stream into events, counting what it had to drop.

    Feed it whatever ``recv`` returned; it yields valid events. A line longer than
    ``MAX_LINE_BYTES`` is discarded up to its newline without being buffered whole.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._skipping = False
        self.invalid = 0
        self.oversized = 0
        self.errors: list[str] = []  # the first few reasons, for the report

    def _reject(self, reason: str) -> None:
        self.invalid += 1
        if len(self.errors) < 10:
            self.errors.append(reason)

    def feed(self, data: bytes) -> Iterator[dict]:
        self._buf.extend(data)
        while True:
            nl = self._buf.find(b"\n")
            if nl < 0:
                if len(self._buf) > MAX_LINE_BYTES:
                    self._buf.clear()
                    if not self._skipping:
                        self.oversized += 1
                        self._reject("oversized line")
                    self._skipping = True
                return
            line = bytes(self._buf[:nl])
            del self._buf[: nl + 1]
            if self._skipping:
                self._skipping = False
                continue
            if not line.strip():
                continue
            try:
                yield decode(line)
            except ProtocolError as exc:
                if "exceeds the limit" in str(exc):
                    self.oversized += 1
                self._reject(str(exc))


def read_events(lines: Iterable[bytes | str], counter: LineDecoder | None = None) -> Iterator[dict]:
    """Decode an iterable of lines (e.g. an open events.jsonl), skipping invalid ones."""
    dec = counter or LineDecoder()
    for line in lines:
        if isinstance(line, str):
            line = line.encode("utf-8", "replace")
        if not line.endswith(b"\n"):
            line += b"\n"
        yield from dec.feed(line)
