"""Messages posted to the app by its reader and control workers (thread-safe)."""
from __future__ import annotations

from textual.message import Message


class EventsArrived(Message):
    """A batch of events read from the run (stored ones first, then the live tail).
    ``history``: read before the reader caught up with the run (nothing to toast)."""

    def __init__(self, events: list[dict], history: bool = False) -> None:
        super().__init__()
        self.events = events
        self.history = history


class CaughtUp(Message):
    """The reader has read everything the run had stored: what comes next is news."""


class StreamEnded(Message):
    """The event source is exhausted (the run ended) or failed."""

    def __init__(self, error: str | None = None) -> None:
        super().__init__()
        self.error = error


class ControlDone(Message):
    """The supervisor's answer to a pause / resume / kill."""

    def __init__(self, cmd: str, ack: dict) -> None:
        super().__init__()
        self.cmd = cmd
        self.ack = ack
