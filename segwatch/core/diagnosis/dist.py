"""Distributed rules, from the ``rank`` field of shim events (kept simple).

* ``dist.rank_divergence``: after DDP's all-reduce every rank holds the same gradients, so
  the total gradient norm at one step must agree across ranks; > 5 % relative spread at
  3 steps means gradients are not synchronized. Also: the median of one rank's last 16
  finite losses > 4x another rank's (evidence ``kind: "loss"``).
* ``dist.same_batches``: training batches at the same step and index with identical label
  histograms and input means on all ranks (3 times): no DistributedSampler.
* ``dist.rank_silent``: a rank whose last event is > 120 s older than a ``step`` event of
  another rank, without a ``bye``; or, at the supervisor's ``proc`` samples (the tree is
  alive, not paused), every rank silent for > max(120 s, 5x its longest gap): the rank with
  the oldest last event is named (``all_silent: true``).
"""
from __future__ import annotations

from collections import OrderedDict, deque

from .base import Rule, ffloat, finite, fint, r4

SPREAD = 0.05
PERSIST = 3
SILENT_S = 120.0
LOSS_WINDOW = 16
LOSS_FACTOR = 4.0
PENDING_MAX = 1024      # sampled steps kept waiting for the other ranks (a bound, not a window)


def _expected(state, ws: int) -> int:
    """Ranks that report here (one node of a multi-node run sees only its own)."""
    try:
        return int(getattr(state, "expected_ranks", ws) or ws)
    except (TypeError, ValueError):
        return ws


class DistRankDivergence(Rule):
    id = "dist.rank_divergence"
    events = ("step",)
    all_ranks = True

    def __init__(self) -> None:
        self._by_step: OrderedDict = OrderedDict()
        self._latest: dict[int, int] = {}     # each rank's latest step with a gradient norm
        self._hits = 0
        self._losses: dict[int, deque] = {}

    def check(self, state, ev):
        ws = fint(ev.get("world_size")) or 1
        if ws < 2:
            return None
        f = self._loss_check(state, ev, ws)
        if f is not None:
            return f
        gn = ffloat(ev.get("grad_norm"))
        if not finite(gn):
            return None
        step = fint(ev.get("step"))
        rank = fint(ev.get("rank")) or 0
        d = self._by_step.setdefault(step, {})
        d[rank] = gn
        n = _expected(state, ws)
        self._forget_passed(rank, step, n)
        if n < 2 or len(d) < n:
            return None
        del self._by_step[step]
        hi, lo = max(d.values()), min(d.values())
        if hi <= 0 or (hi - lo) / hi <= SPREAD:
            return None
        self._hits += 1
        if self._hits < PERSIST:
            return None
        return self.make(state, ev, {
            "kind": "grad_norm", "step": step, "grad_norm_by_rank": {str(k): r4(v) for k, v in sorted(d.items())},
            "spread": r4((hi - lo) / hi), "tolerance": SPREAD, "steps_diverged": self._hits,
        })


    def _forget_passed(self, rank: int, step: int, n: int) -> None:
        """Ranks sample at their own periods (dense on one rank, every 32nd step on another)
        and their events arrive with their own delays, so a count of pending steps is no
        window: a step is forgotten once every rank has reported a later one (each rank's
        steps arrive in order: one that has passed a step never sends it)."""
        self._latest[rank] = max(step, self._latest.get(rank, step))
        if len(self._latest) >= n:
            low = min(self._latest.values())
            for passed in [s for s in self._by_step if s < low]:
                del self._by_step[passed]
        while len(self._by_step) > PENDING_MAX:
            self._by_step.popitem(last=False)

    def _loss_check(self, state, ev, ws):
        """Losses differ per rank (each sees its own shard), but not by a factor: the median
        of the last LOSS_WINDOW finite losses of one rank > LOSS_FACTOR x another's means the
        replicas no longer train the same model (or one rank's data is broken)."""
        loss = ffloat(ev.get("loss"))
        if not finite(loss):
            return None
        r = fint(ev.get("rank")) or 0
        self._losses.setdefault(r, deque(maxlen=LOSS_WINDOW)).append(loss)
        n = _expected(state, ws)
        if n < 2 or len(self._losses) < n or any(len(d) < LOSS_WINDOW for d in self._losses.values()):
            return None
        med = {k: float(sorted(d)[len(d) // 2]) for k, d in self._losses.items()}
        hi, lo = max(med.values()), min(med.values())
        if lo <= 0 or hi / lo <= LOSS_FACTOR:
            return None
        return self.make(state, ev, {
            "kind": "loss", "step": fint(ev.get("step")),
            "loss_median_by_rank": {str(k): r4(v) for k, v in sorted(med.items())},
            "ratio": r4(hi / lo), "tolerance": LOSS_FACTOR, "window": LOSS_WINDOW,
        })


class DistSameBatches(Rule):
    id = "dist.same_batches"
    events = ("batch",)
    all_ranks = True

    def __init__(self) -> None:
        self._by_key: OrderedDict = OrderedDict()
        self._hits = 0

    def check(self, state, ev):
        ws = fint(ev.get("world_size")) or 1
        if ws < 2 or ev.get("phase") != "train":
            return None
        labels = ev.get("labels") if isinstance(ev.get("labels"), dict) else {}
        inputs = ev.get("inputs") if isinstance(ev.get("inputs"), list) else []
        sig = (tuple(labels.get("hist") or ()),
               tuple(ffloat(i.get("mean")) for i in inputs if isinstance(i, dict)))
        if sig == ((), ()):
            return None
        key = (fint(ev.get("step")), fint(ev.get("index")))
        d = self._by_key.setdefault(key, {})
        d[fint(ev.get("rank")) or 0] = sig
        while len(self._by_key) > 32:
            self._by_key.popitem(last=False)
        n = _expected(state, ws)
        if n < 2 or len(d) < n:
            return None
        del self._by_key[key]
        if len(set(d.values())) != 1:
            return None
        self._hits += 1
        if self._hits < PERSIST:
            return None
        return self.make(state, ev, {"ranks": n, "identical_batches": self._hits, "step": key[0]})


class DistRankSilent(Rule):
    id = "dist.rank_silent"
    # "probe": a rank paused by another node says "still paused" every 30 s (shim/pause.py)
    events = ("step", "batch", "preds", "eval", "bye", "overhead", "proc", "probe")
    all_ranks = True

    def __init__(self) -> None:
        self._last: dict[int, tuple[float, int]] = {}
        self._gap: dict[int, float] = {}     # longest gap seen between two events of a rank
        self._gone: set[int] = set()

    def check(self, state, ev):
        if ev["type"] == "proc":
            return self._all_silent(state, ev)
        ws = fint(ev.get("world_size")) or 1
        rank = fint(ev.get("rank")) or 0
        t = ffloat(ev.get("t"))
        if ws < 2 or not finite(t):
            return None
        if ev["type"] == "bye":
            self._gone.add(rank)
        prev = self._last.get(rank)
        if prev is not None and t > prev[0]:
            self._gap[rank] = max(self._gap.get(rank, 0.0), t - prev[0])
        self._last[rank] = (t, fint(ev.get("step")) or 0)
        if ev["type"] != "step":
            return None
        for r, (tr, sr) in self._last.items():
            if r in self._gone or r == rank:
                continue
            if t - tr > SILENT_S:
                return self.make(state, ev, {
                    "rank": r, "silent_for_s": r4(t - tr), "last_step": sr,
                    "reporting_rank": rank, "step_reporting": fint(ev.get("step")),
                })
        return None

    def _all_silent(self, state, ev):
        """Every rank silent (a hang holds the others in their next collective): seen from
        the supervisor's ``proc`` samples (the tree is alive), unless the run is paused. The
        rank whose last event is oldest is named. A rank's limit is SILENT_S or 5x the longest
        gap it ever left between two events (slow, sparsely sampled steps)."""
        t = ffloat(ev.get("t"))
        live = {r: v for r, v in self._last.items() if r not in self._gone}
        if not live or not finite(t) or int(getattr(state, "world_size", 1) or 1) < 2:
            return None
        if getattr(state, "status", None) == "paused":
            for r, (_, sr) in live.items():      # the pause is not silence: restart the clocks
                self._last[r] = (t, sr)
            return None
        if not all(t - tr > max(SILENT_S, 5.0 * self._gap.get(r, 0.0)) for r, (tr, _) in live.items()):
            return None
        r, (tr, sr) = min(live.items(), key=lambda kv: (kv[1][0], kv[0]))
        return self.make(state, None, {
            "rank": r, "silent_for_s": r4(t - tr), "last_step": sr, "all_silent": True,
            "last_step_by_rank": {str(k): v[1] for k, v in sorted(live.items())},
        }, step=max(v[1] for v in live.values()))
