"""Sampling under an overhead budget.

The shim times its own work (``perf_counter`` around every hook body) and the wall time of
training steps. Work done on every step whatever the schedule (counting, keeping a reference
to the loss) is the *base* cost; each probe (``batch``, ``preds``, ``grads``, ``update``,
``readback``) has a cost per sampled step. After a dense warm-up (every probe every step for
the first ``warmup`` steps: faults that are there from the start are seen at once), every
``window`` steps the sampler recomputes each probe's interval so that

    base + sum_p cost_p / interval_p  <=  target * budget * step_time

by water-filling: the cheapest probes get their interval first, the remaining budget is
shared by the others. Intervals shrink again when steps get slower or probes cheaper.
The read-back (which carries every step's loss, so a NaN loss is seen) goes first: it
happens at least every ``readback_cap`` (10) steps, its cost taken off the budget before the
others share the rest, unless that alone would take more than half of the budget (steps of a
few ms on a CPU), where the budget wins.
``debug`` = every probe every step.
"""
from __future__ import annotations

import math
import time

PROBES = ("batch", "preds", "grads", "update", "readback")
WEIGHTS = {"batch": 1.0, "preds": 2.0, "grads": 2.0, "update": 0.5, "readback": 1.0}


class Sampler:
    def __init__(self, budget: float = 0.01, debug: bool = False, warmup: int = 20,
                 window: int = 20, max_interval: int = 1000, readback_min: int = 1,
                 readback_cap: int = 10, target: float = 0.9) -> None:
        self.budget = float(budget) if budget and budget > 0 else 0.01
        self.debug = bool(debug)
        self.warmup = int(warmup)
        self.window = int(window)
        self.max_interval = int(max_interval)
        self.readback_min = max(1, int(readback_min))
        # Read back at least every ``readback_cap`` steps (every step's loss travels with it),
        # so that a non-finite loss is reported within that many steps.
        self.readback_cap = max(self.readback_min, int(readback_cap))
        self.target = target
        self.interval = {p: 1 for p in PROBES}
        self.interval["readback"] = self.readback_min
        self.last = {p: -10 ** 9 for p in PROBES}
        self.cost = {p: None for p in PROBES}            # seconds per sampled call (EMA)
        # current window
        self._w_spent = {p: 0.0 for p in PROBES}
        self._w_calls = {p: 0 for p in PROBES}
        self._w_base = 0.0
        self._w_steps = 0
        self._w_wall = 0.0
        self._w_start_step = 0
        self.last_share: float | None = None
        self.windows = 0
        self._tight = 1.0
        self.inner = 0.0          # all time ever spent, for nested accounting (Shim._clock)
        self.last_base: float | None = None       # unsampled hook time per step, last window
        self.last_step_time: float | None = None
        # totals
        self.spent_total = 0.0
        self.wall_total = 0.0
        self.steps_total = 0
        self.eval_spent = 0.0
        # after the warm-up window (the schedule is adaptive from there on)
        self.steady_spent = 0.0
        self.steady_wall = 0.0
        self._last_step_t: float | None = None
        self._skip_wall = False

    # -- decisions --------------------------------------------------------------------
    def due(self, probe: str, step: int) -> bool:
        """Whether ``probe`` samples training step ``step`` (1-based step in progress)."""
        if self.debug or step <= self.warmup:
            return True
        return step - self.last[probe] >= self.interval[probe]

    def mark(self, probe: str, step: int) -> None:
        self.last[probe] = step

    def readback_due(self, step: int) -> bool:
        if self.debug:
            return True
        if step <= self.warmup:
            return step - self.last["readback"] >= self.readback_min
        return step - self.last["readback"] >= self.interval["readback"]

    # -- accounting -------------------------------------------------------------------
    def spend(self, probe: str | None, seconds: float) -> None:
        """Add shim time; ``probe`` None = base (unsampled) cost."""
        self.inner += seconds
        self.spent_total += seconds
        if probe is None:
            self._w_base += seconds
        elif probe == "eval" or probe == "oneoff":
            # evaluation passes (observed whole, not sampled) and one-off work (model
            # discovery, epoch boundaries) are kept out of the per-step training budget
            self.eval_spent += seconds
            self.spent_total -= seconds
        else:
            self._w_spent[probe] += seconds
            self._w_calls[probe] += 1

    def skip_wall(self) -> None:
        """The time until the next step is not training (an evaluation ran): don't count it."""
        self._skip_wall = True

    def step_done(self, step: int) -> bool:
        """Called once per training step (at backward). Returns True when a window closed."""
        now = time.perf_counter()
        if self._last_step_t is not None and not self._skip_wall:
            dt = now - self._last_step_t
            self._w_wall += dt
            self.wall_total += dt
            self._w_steps += 1
            self.steps_total += 1
        self._skip_wall = False
        self._last_step_t = now
        if self._w_steps >= self.window and step > self.warmup:
            self._close_window()
            return True
        return False

    def share_total(self) -> float | None:
        if self.wall_total <= 0:
            return None
        return self.spent_total / self.wall_total

    # -- adaptation -------------------------------------------------------------------
    def share_steady(self) -> float | None:
        """Share since the end of the warm-up (what the adaptive schedule achieved)."""
        if self.steady_wall <= 0:
            return None
        return self.steady_spent / self.steady_wall

    def _close_window(self) -> None:
        steps = max(1, self._w_steps)
        wall = self._w_wall
        spent = self._w_base + sum(self._w_spent.values())
        self.last_share = spent / wall if wall > 0 else None
        if self.windows > 0:
            self.steady_spent += spent
            self.steady_wall += wall
        for p in PROBES:
            if self._w_calls[p]:
                c = self._w_spent[p] / self._w_calls[p]
                self.cost[p] = c if self.cost[p] is None else 0.5 * self.cost[p] + 0.5 * c
        step_time = wall / steps if wall > 0 else None
        base = self._w_base / steps
        self.last_base = base
        self.last_step_time = step_time
        if not self.debug and step_time:
            self._adapt(step_time, base)
        self.windows += 1
        self._w_spent = {p: 0.0 for p in PROBES}
        self._w_calls = {p: 0 for p in PROBES}
        self._w_base = 0.0
        self._w_steps = 0
        self._w_wall = 0.0

    def _adapt(self, step_time: float, base: float) -> None:
        # closed loop on top of the cost model: a window that measured more than the budget
        # (preemption, cold caches, a cost estimate that lags) tightens the next ones
        sh = self.last_share
        # (not from the first window after the warm-up: its schedule came from warm-up
        # estimates, where every hook's time counted as sampled work)
        if sh is not None and self.windows > 1:
            if sh > self.budget:
                self._tight = min(64.0, self._tight * 1.5)
            elif sh < 0.8 * self.budget:
                self._tight = max(1.0, self._tight / 1.25)
        avail = self.target * self.budget * step_time / self._tight - base
        # The read-back carries every step's loss: it is what reports a NaN loss. It is
        # cheap and kept within ``readback_cap`` steps whatever the budget says; its cost
        # is taken off the budget before the other probes share the rest.
        rc = self.cost["readback"]
        if rc is not None:
            n = sum(1 for p in PROBES if self.cost[p] is not None)
            share = avail / n if avail > 0 else 0.0
            iv = math.ceil(rc / share) if share > 0 else self.readback_cap
            iv = min(self.readback_cap, max(self.readback_min, iv))
            # ...unless the read-back alone would take more than half of the budget (steps of
            # a few ms on CPU): then the budget wins and NaN losses are reported later
            whole = self.target * self.budget * step_time / self._tight
            if whole > 0 and rc / iv > 0.5 * whole:
                iv = max(iv, math.ceil(rc / (0.5 * whole)))
            self.interval["readback"] = min(self.max_interval, iv)
            avail -= rc / self.interval["readback"]
        probes = [p for p in PROBES if p != "readback" and self.cost[p] is not None]
        if avail <= 0:
            # not even the unsampled hooks fit: back off quickly (x4 per window), not at once
            for p in probes:
                self.interval[p] = min(self.max_interval, max(2, self.interval[p] * 4))
            return
        # weighted water-filling: cheapest first, each takes at most its weighted share of
        # what is left (what it does not need goes to the others). Transient step-level
        # faults (collapse, exploding gradients) weigh more than label statistics, which
        # are wrong in every batch when they are wrong at all.
        probes.sort(key=lambda p: self.cost[p])
        left = avail
        wleft = sum(WEIGHTS[p] for p in probes)
        for p in probes:
            share = left * WEIGHTS[p] / wleft if wleft > 0 else 0.0
            wleft -= WEIGHTS[p]
            iv = max(1, math.ceil(self.cost[p] / share)) if share > 0 else self.max_interval
            iv = min(self.max_interval, iv)
            self.interval[p] = iv
            left -= self.cost[p] / iv

    def intervals(self) -> dict[str, int]:
        if self.debug:
            return {p: 1 for p in PROBES}
        return dict(self.interval)
