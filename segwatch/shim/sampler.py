"""Sampling under an overhead budget, with a coverage floor.

The shim times its own work (``perf_counter`` around every hook body) and the wall time of
training steps. Work done on every step whatever the schedule (counting, keeping a copy of
the loss) is the *base* cost; each probe (``batch``, ``preds``, ``grads``, ``update``,
``readback``) has a cost per sampled step.

Which steps a probe samples follows from the step number alone: a probe with period ``P``
(a power of two) samples the steps with ``step % P == 0``. Two ranks, or a loaded and an
idle machine, see the same steps, and the probes with equal periods sample the same steps
(the batch, the prediction and the gradients of one step together).

* Dense start: the first ``warmup`` (20) steps are sampled every step (faults that are there
  from the start are seen at once), except a probe whose measured cost (from its second
  call on) is more than ``dense_share`` (10%) of a training step and whose whole dense start
  would cost more than ``dense_min_s`` (0.5 s: 25 ms per call; cheaper probes cost little in
  absolute terms, and tiny trainings keep a dense start that does not depend on the
  machine's load): it gets the smallest period that brings it under that share.
* After it, every ``window`` steps each probe's period is recomputed so that

      base + sum_p cost_p / period_p  <=  target * budget * step_time

  by water-filling (cheapest first, each takes at most its weighted share of what is left),
  but never beyond the coverage floor: ``max_interval`` (32) for every probe, and
  ``readback_cap`` (10: every step's loss travels with the read-back, so a NaN loss is seen
  within that many steps) for the read-back, both rounded down to a power of two. The budget
  only chooses between every step and the floor. When the floor costs more than the budget,
  the floor is kept and ``over_budget`` says so.
* ``gaps``: the largest distance in steps between two samples of each probe after the
  dense start (what the floor guarantees, measured).

``debug`` = every probe every step.
"""
from __future__ import annotations

import math
import time

PROBES = ("batch", "preds", "grads", "update", "readback")
WEIGHTS = {"batch": 1.0, "preds": 2.0, "grads": 2.0, "update": 0.5, "readback": 1.0}


def pow2_floor(n: int) -> int:
    """The largest power of two <= n (n >= 1)."""
    return 1 << (max(1, int(n)).bit_length() - 1)


def pow2_ceil(x: float) -> int:
    """The smallest power of two >= x (1 for x <= 1)."""
    if not x > 1:
        return 1
    if math.isinf(x) or x > 2 ** 40:
        return 2 ** 40
    return 1 << (math.ceil(x) - 1).bit_length()


class Sampler:
    def __init__(self, budget: float = 0.01, debug: bool = False, warmup: int = 20,
                 window: int = 20, max_interval: int = 32, readback_min: int = 1,
                 readback_cap: int = 10, target: float = 0.9, dense_share: float = 0.1,
                 dense_min_s: float = 0.5) -> None:
        self.budget = float(budget) if budget and budget > 0 else 0.01
        self.debug = bool(debug)
        self.warmup = int(warmup)
        self.window = int(window)
        self.max_interval = max(1, int(max_interval))
        self.readback_cap = int(readback_cap)
        self.target = target
        self.dense_share = float(dense_share)
        self.dense_min_s = float(dense_min_s)
        self.readback_min = 1
        self.set_readback_min(readback_min)
        self.interval = {p: 1 for p in PROBES}
        self.interval["readback"] = self.readback_min
        # dense start: every step, unless a probe costs more than dense_share of a step
        self.dense = {p: 1 for p in PROBES}
        self.dense["readback"] = self.readback_min
        self.last: dict[str, int | None] = {p: None for p in PROBES}
        self.gap = {p: 0 for p in PROBES}                 # largest gap after the dense start
        self.over_budget = False
        self._force_readback = False
        self.cost = {p: None for p in PROBES}            # seconds per sampled call (EMA)
        self._call_cost = {p: None for p in PROBES}      # per call, from the 2nd call on (EMA)
        self._calls = {p: 0 for p in PROBES}
        self._part = {p: 0.0 for p in PROBES}            # time of a call not yet counted
        self._train_dt: float | None = None              # step wall time minus shim time
        self._inner_at_step = 0.0
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

    # -- floors -----------------------------------------------------------------------
    @property
    def floor(self) -> int:
        """The longest period of every probe but the read-back."""
        return pow2_floor(self.max_interval)

    @property
    def readback_floor(self) -> int:
        return pow2_floor(min(self.readback_cap, self.max_interval))

    def cap(self, probe: str) -> int:
        return self.readback_floor if probe == "readback" else self.floor

    def set_readback_min(self, n: int) -> None:
        """Read back at most every ``n`` steps where the floor allows (a read-back
        synchronises a CUDA device): a power of two, not above the read-back floor."""
        self.readback_min = min(pow2_ceil(max(1, int(n))), self.readback_floor)
        if hasattr(self, "interval"):
            self.interval["readback"] = max(self.interval["readback"], self.readback_min)
            self.dense["readback"] = max(self.dense["readback"], self.readback_min)

    # -- decisions --------------------------------------------------------------------
    def period(self, probe: str, step: int) -> int:
        if self.debug:
            return 1
        return self.dense[probe] if step <= self.warmup else self.interval[probe]

    def due(self, probe: str, step: int) -> bool:
        """Whether ``probe`` samples training step ``step`` (1-based step in progress)."""
        if self.debug:
            return True
        return self.last[probe] != step and step % self.period(probe, step) == 0

    def mark(self, probe: str, step: int) -> None:
        last = self.last[probe]
        if last is not None and step > self.warmup and step - last > self.gap[probe]:
            self.gap[probe] = step - last
        self.last[probe] = step
        if probe == "readback":
            self._force_readback = False

    def readback_due(self, step: int) -> bool:
        if self.debug or self._force_readback:
            return True
        return self.last["readback"] != step and step % self.period("readback", step) == 0

    def request_readback(self) -> None:
        """The next ``readback_due`` says yes (a buffer is full)."""
        self._force_readback = True

    def gaps(self) -> dict[str, int]:
        """Largest gap in steps between two samples of each probe after the dense start."""
        return dict(self.gap)

    # -- accounting -------------------------------------------------------------------
    def spend(self, probe: str | None, seconds: float, call: bool = True) -> None:
        """Add shim time; ``probe`` None = base (unsampled) cost. ``call=False``: a part of
        the probe's next counted call (a probe that works in two hooks of one step)."""
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
            if not call:
                self._part[probe] += seconds
                return
            seconds += self._part[probe]
            self._part[probe] = 0.0
            self._w_calls[probe] += 1
            n = self._calls[probe] = self._calls[probe] + 1
            if n >= 2:              # the first call pays one-off costs (allocation, caches)
                c = self._call_cost[probe]
                self._call_cost[probe] = seconds if c is None else 0.5 * c + 0.5 * seconds

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
            train = max(dt - (self.inner - self._inner_at_step), 1e-9)
            self._train_dt = train if self._train_dt is None else 0.7 * self._train_dt + 0.3 * train
        self._skip_wall = False
        self._last_step_t = now
        self._inner_at_step = self.inner
        if step <= self.warmup and not self.debug:
            self._dense_periods()
        if self._w_steps >= self.window and step > self.warmup:
            self._close_window()
            return True
        return False

    def _dense_periods(self) -> None:
        """A probe that costs more than ``dense_share`` of a training step does not run
        every step of the dense start: the smallest power-of-two period that fits."""
        if self._train_dt is None:
            return
        allowed = self.dense_share * self._train_dt
        for p in PROBES:
            c = self._call_cost[p]
            if c is None:
                continue
            lo = self.readback_min if p == "readback" else 1
            if c * self.warmup < self.dense_min_s:
                self.dense[p] = lo
            else:
                self.dense[p] = min(self.cap(p), max(lo, pow2_ceil(c / allowed)))

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
        known = [p for p in PROBES if self.cost[p] is not None]
        # The read-back carries every step's loss (it reports a NaN loss): its period is
        # chosen first, from an equal share of the budget, and its cost taken off the rest.
        rc = self.cost["readback"]
        if rc is not None:
            share = avail / len(known) if avail > 0 else 0.0
            iv = pow2_ceil(rc / share) if share > 0 else self.readback_floor
            self.interval["readback"] = min(self.readback_floor, max(self.readback_min, iv))
            avail -= rc / self.interval["readback"]
        probes = [p for p in PROBES if p != "readback" and p in known]
        # weighted water-filling: cheapest first, each takes at most its weighted share of
        # what is left (what it does not need goes to the others). Transient step-level
        # faults (collapse, exploding gradients) weigh more than label statistics, which
        # are wrong in every batch when they are wrong at all. Never beyond the floor.
        probes.sort(key=lambda p: self.cost[p])
        left = avail
        wleft = sum(WEIGHTS[p] for p in probes)
        for p in probes:
            share = left * WEIGHTS[p] / wleft if wleft > 0 and left > 0 else 0.0
            wleft -= WEIGHTS[p]
            iv = pow2_ceil(self.cost[p] / share) if share > 0 else self.floor
            self.interval[p] = min(self.floor, iv)
            left -= self.cost[p] / self.interval[p]
        # the update probe compares parameters around a step whose gradients were sampled:
        # it cannot sample more often than the gradients
        self.interval["update"] = max(self.interval["update"], self.interval["grads"])
        # Over budget: even the floor costs more than the budget (cost model), or the last
        # window measured more than the budget with every probe already at its floor.
        at_floor = base + sum(self.cost[p] / self.cap(p) for p in known)
        all_capped = all(self.interval[p] >= self.cap(p) for p in known)
        self.over_budget = bool(at_floor > self.budget * step_time
                                or (sh is not None and sh > self.budget and all_capped))

    def intervals(self) -> dict[str, int]:
        if self.debug:
            return {p: 1 for p in PROBES}
        return dict(self.interval)
