"""Deterministic merge of several nodes' event streams into one.

Each node's events keep their own order (a node's run directory holds them in arrival
order); between nodes the next event is the head with the smallest ``(t, node index)``. This
is a merge of sequences, not a sort, so the result depends only on the sequences themselves:
``replay`` of the same run directories always gives the same merged stream, and a live
merger that waits until every unfinished node has an event buffered gives that same stream
too. Every event is tagged with ``node`` (the node's index in the fleet) on the way out.

stdlib only (no torch, no textual).
"""
from __future__ import annotations

import math
import time
from collections import deque
from typing import Iterable, Iterator, Sequence

#: a live node that delivers nothing for this long (wall seconds, counted from its last events
#: or from the first time it was asked and had none, whichever is later) no longer holds the
#: others back: its later events are merged as they come (the view must not freeze on a hung node)
HOLD_S = 10.0


def event_time(ev: dict) -> float:
    t = ev.get("t")
    if isinstance(t, (int, float)) and not isinstance(t, bool) and math.isfinite(t):
        return float(t)
    return -math.inf   # an event without a time goes as early as its node's order allows


def merge_node_events(streams: Sequence[Iterable[dict]]) -> Iterator[dict]:
    """Merge complete per-node event sequences (index = node); tags each event with ``node``."""
    merger = StreamMerger(len(streams), hold_s=None)
    iters = [iter(s) for s in streams]
    for i, it in enumerate(iters):
        _refill(merger, i, it)
    while True:
        ev = merger.pop()
        if ev is None:
            empty = [i for i, b in enumerate(merger.buffers) if not b and not merger.done[i]]
            if not empty:
                return
            for i in empty:
                _refill(merger, i, iters[i])
            continue
        yield ev
        i = ev["node"]
        if not merger.buffers[i] and not merger.done[i]:
            _refill(merger, i, iters[i])


def _refill(merger: "StreamMerger", node: int, it: Iterator[dict], n: int = 256) -> None:
    batch = []
    for ev in it:
        batch.append(ev)
        if len(batch) >= n:
            break
    if batch:
        merger.push(node, batch)
    else:
        merger.finish(node)


class StreamMerger:
    """Incremental merge: ``push(node, events)`` as they arrive, ``finish(node)`` when a
    node's stream has ended, ``pop()`` the next merged event or None when the next one
    cannot be decided yet (an unfinished node has nothing buffered)."""

    def __init__(self, nodes: int, hold_s: float | None = HOLD_S) -> None:
        self.buffers: list[deque] = [deque() for _ in range(nodes)]
        self.done: list[bool] = [False] * nodes
        self.hold_s = hold_s
        self._last_seen = [time.monotonic()] * nodes
        # when a node was first asked and had nothing new (None: not asked since its last
        # events): a node is quiet after hold_s of being asked, so a reader that was itself
        # held up (a loaded machine, a long ingest) does not count its own delay as the node's
        self._asked_empty_since: list[float | None] = [None] * nodes
        self.released_early = 0    # events merged without waiting for a quiet node (order may differ from replay)

    def push(self, node: int, events: Iterable[dict]) -> None:
        buf = self.buffers[node]
        for ev in events:
            if isinstance(ev, dict):
                buf.append(ev)
        self._last_seen[node] = time.monotonic()
        self._asked_empty_since[node] = None

    def nothing_new(self, node: int, now: float | None = None) -> None:
        """The node was asked for events and had none (a live reader calls this per poll)."""
        if self._asked_empty_since[node] is None:
            self._asked_empty_since[node] = time.monotonic() if now is None else now

    def finish(self, node: int) -> None:
        self.done[node] = True

    @property
    def pending(self) -> int:
        return sum(len(b) for b in self.buffers)

    def pop(self) -> dict | None:
        best = None
        best_key = None
        now = None
        early = False
        for i, buf in enumerate(self.buffers):
            if not buf:
                if self.done[i]:
                    continue
                if self.hold_s is None:
                    return None
                now = now if now is not None else time.monotonic()
                asked = self._asked_empty_since[i]
                if now - max(self._last_seen[i], asked if asked is not None else -math.inf) < self.hold_s:
                    return None
                early = True      # a quiet node: merge without it
                continue
            key = (event_time(buf[0]), i)
            if best_key is None or key < best_key:
                best, best_key = i, key
        if best is None:
            return None
        if early:
            self.released_early += 1
        ev = self.buffers[best].popleft()
        ev["node"] = best
        return ev

    def drain(self) -> list[dict]:
        out = []
        while True:
            ev = self.pop()
            if ev is None:
                return out
            out.append(ev)
