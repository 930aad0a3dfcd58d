"""The live merger's hold on a quiet node counts the node's silence, not the reader's: a
reader held up for longer than HOLD_S (a loaded machine, a long ingest) that finds a node with
nothing new starts the clock then, instead of merging the other nodes' events at once in an
order a replay would not give (fast, in process)."""
from __future__ import annotations

import time

from segwatch.fleet.merge import StreamMerger, merge_node_events


def _ev(t, step):
    return {"v": 1, "type": "step", "t": float(t), "step": step}


def test_a_reader_held_up_does_not_take_a_node_for_quiet():
    m = StreamMerger(2, hold_s=10.0)
    m.push(1, [_ev(0.5, 1)])
    m.push(0, [_ev(1, 1), _ev(2, 2), _ev(3, 3)])
    assert [(e["node"], e["t"]) for e in m.drain()] == [(1, 0.5)]    # node 1 may send t < 1 yet
    m._last_seen[1] -= 60.0            # the reader was away 60 s since node 1's last events ...
    m.nothing_new(1)                   # ... and finds nothing new from it now: hold on
    assert m.drain() == [] and m.released_early == 0
    m.push(1, [_ev(1.5, 2)])           # what a replay would interleave
    m.finish(1)
    assert [(e["node"], e["t"]) for e in m.drain()] == [(0, 1.0), (1, 1.5), (0, 2.0), (0, 3.0)]
    assert m.released_early == 0


def test_a_node_asked_and_silent_past_the_hold_is_merged_without():
    m = StreamMerger(2, hold_s=10.0)
    m.push(0, [_ev(1, 1), _ev(2, 2)])
    m._last_seen[1] -= 60.0
    m.nothing_new(1, now=time.monotonic() - 9.0)      # asked, silent for 9 s: still held
    assert m.drain() == []
    m2 = StreamMerger(2, hold_s=10.0)
    m2.push(0, [_ev(1, 1), _ev(2, 2)])
    m2._last_seen[1] -= 60.0
    m2.nothing_new(1, now=time.monotonic() - 11.0)    # silent past the hold: go on without it
    m2.nothing_new(1)                                  # (a later empty poll keeps the first time)
    assert [e["t"] for e in m2.drain()] == [1.0, 2.0] and m2.released_early == 2


def test_replay_merge_is_unchanged():
    a, b = [_ev(1, 1), _ev(3, 2)], [_ev(2, 1), _ev(4, 2)]
    assert [(e["node"], e["t"]) for e in merge_node_events([a, b])] == [(0, 1.0), (1, 2.0), (0, 3.0), (1, 4.0)]
