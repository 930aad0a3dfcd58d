"""Slow-burn optimizer bugs: ``optim.grads_accumulate`` and ``optim.lr_schedule``.

Both read fields of the sampled ``step`` events (docs/EVENTS.md): ``grad_before_backward``
and ``backwards_since_step`` (gradients left over when the first backward after an
optimizer step begins), ``lr`` (per group, read after backward), ``lr_applied`` (per group,
read just before ``optimizer.step()``; always sent for optimizer steps 1..3),
``scheduler`` (``{cls, steps_total}`` of the LR scheduler whose ``step()`` is called).
"""
from __future__ import annotations

from collections import deque

from .base import Rule, ffloat, finite, fint, r4

#: leftover gradients count as "not reset" above this norm (an exact 0.0 when zero_grad ran)
LEFTOVER_MIN = 1e-12
#: grads_accumulate: this many sampled first-backwards with leftovers ...
ACCUM_SAMPLES = 3
#: ... making at least this share of the last ACCUM_WINDOW measured ones
ACCUM_SHARE = 0.8
ACCUM_WINDOW = 8

#: lr_schedule (a): LR below this fraction of its peak ...
LR_FLOOR = 1e-3
#: ... for at least this many steps, and this share of the steps before it went below
#: (a cosine schedule spends its last ~2 % below 1e-3 of its peak: not a bug)
LR_FLOOR_STEPS = 100
LR_FLOOR_SHARE = 0.05
#: lr_schedule (b): schedulers meant to be stepped once per epoch
EPOCH_SCHEDULERS = ("StepLR", "MultiStepLR", "ExponentialLR")
#: ... whose step count tracks the optimizer's and whose decay took the LR below this
#: fraction of the peak early: before half of train.max_steps when known; otherwise the LR
#: stays there for at least half as long as the decay took (and >= EPOCH_STAY steps). A
#: per-iteration MultiStepLR with milestones late in the run (healthy) reaches 1e-2 of its
#: peak near the end; StepLR(step_size=30) stepped per iteration reaches it at step 60.
EPOCH_DECAY = 1e-2
EPOCH_STAY = 32


def _lr_max(v) -> float | None:
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        v = [v]
    if not isinstance(v, list):
        return None
    vals = [ffloat(x) for x in v]
    vals = [x for x in vals if finite(x)]
    return max(vals) if vals else None


class OptimGradsAccumulate(Rule):
    """Gradients are not reset between optimizer steps: when the first backward after a
    step begins, the parameters still hold non-zero gradients, on several sampled steps.
    Intended accumulation (zero_grad every k backwards) is quiet: its first backward after
    a step starts from zero like any other."""
    id = "optim.grads_accumulate"
    events = ("step",)

    def __init__(self) -> None:
        self._seen: deque = deque(maxlen=ACCUM_WINDOW)   # (step, leftover, grad_norm)

    def check(self, state, ev):
        if fint(ev.get("backwards_since_step")) != 1 or ev.get("grad_before_backward") is None:
            return None
        opt = fint(ev.get("optimizer_steps_total"))
        if opt is not None and opt <= 1:
            return None  # the run's first backward: no optimizer step before it
        gb = ffloat(ev.get("grad_before_backward"))
        if gb is None:
            return None
        step = fint(ev.get("step")) or 0
        self._seen.append((step, gb, ffloat(ev.get("grad_norm"))))
        hits = [x for x in self._seen if not finite(x[1]) or x[1] > LEFTOVER_MIN]
        if len(hits) < ACCUM_SAMPLES or len(hits) < ACCUM_SHARE * len(self._seen):
            return None
        return self.make(state, ev, {
            "why": "gradients are non-zero when the first backward after optimizer.step() begins",
            "samples": len(hits), "measured": len(self._seen),
            "steps": [s for s, _, _ in hits][-4:],
            "grad_before_backward": [r4(g) for _, g, _ in hits][-4:],
            "grad_norm": r4(hits[-1][2]) if hits[-1][2] is not None else None,
            "backwards_since_step": 1,
        }, severity="error")


class OptimLrSchedule(Rule):
    """The LR schedule is broken: (a) the LR sits below 1e-3 of its peak for >= 100 steps
    (and >= 5 % of the run so far) while training goes on; (b) an epoch scheduler
    (StepLR/MultiStepLR/ExponentialLR) is stepped once per optimizer step and its decay
    took the LR below 1e-2 of its peak early; (c) the LR set after ``optimizer.step()``:
    optimizer step 1 ran at the peak and step 2 far below it (a warm-up skipped, then
    restarted one step late)."""
    id = "optim.lr_schedule"
    events = ("step",)

    def __init__(self) -> None:
        self._peak = 0.0
        self._peak_step = 0
        self._below_since: int | None = None
        self._history: deque = deque(maxlen=12)     # (step, lr) samples, for the evidence
        self._applied: dict[int, float] = {}        # optimizer step (1..3) -> LR it used
        self._first_step: int | None = None
        self._c_done = False
        self._decayed_at: int | None = None        # (b): when the LR first fell below 1e-2 of peak

    def _evidence(self, why: str, why_zh: str, sched, **more) -> dict:
        d = {"why": why, "why_zh": why_zh, "peak_lr": r4(self._peak), "peak_step": self._peak_step,
             "lr_history": [[s, r4(v)] for s, v in self._history],
             "scheduler": sched.get("cls") if isinstance(sched, dict) else None}
        d.update(more)
        return d

    def check(self, state, ev):
        step = fint(ev.get("step")) or 0
        sched = ev.get("scheduler") if isinstance(ev.get("scheduler"), dict) else None
        applied = _lr_max(ev.get("lr_applied"))
        k = fint(ev.get("optimizer_steps_total"))
        if applied is not None and k is not None and 1 <= k <= 3 and k not in self._applied:
            self._applied[k] = applied
        lr = _lr_max(ev.get("lr"))
        if lr is None:
            lr = applied
        if lr is None:
            return None
        if self._first_step is None:
            self._first_step = step
        if not self._history or self._history[-1][0] != step:
            self._history.append((step, lr))
        if lr > self._peak:
            self._peak, self._peak_step = lr, step
        found = self._set_after_step(state, ev, sched)
        if found is not None:
            return found
        if self._peak <= 0:
            return None
        # (b) an epoch scheduler stepped per iteration
        if sched and str(sched.get("cls")) in EPOCH_SCHEDULERS:
            n, opt = fint(sched.get("steps_total")), fint(ev.get("optimizer_steps_total"))
            collapsed = lr <= EPOCH_DECAY * self._peak * (1 + 1e-9)
            if not collapsed:
                self._decayed_at = None
            elif self._decayed_at is None:
                self._decayed_at = step
            max_steps = fint(state.cfg("train", "max_steps"))
            if collapsed and max_steps:
                early = self._decayed_at <= max_steps // 2
            elif collapsed:
                took = self._decayed_at - (self._first_step or 0)
                early = step - self._decayed_at >= max(EPOCH_STAY, took / 2)
            else:
                early = False
            if n and opt and opt >= 10 and n >= 0.8 * opt and early:
                return self.make(state, ev, self._evidence(
                    f"{sched.get('cls')} is stepped every iteration ({n} scheduler steps in {opt} "
                    f"optimizer steps): LR {lr:.3g} at step {step}, {lr / self._peak:.1e} of its peak",
                    f"{sched.get('cls')} 每个迭代都调用了 step()（{opt} 次优化器更新中调用 {n} 次）："
                    f"第 {step} 步学习率为 {lr:.3g}，只有峰值的 {lr / self._peak:.1e}",
                    sched, lr=r4(lr), scheduler_steps=n, optimizer_steps=opt))
        # (a) near zero for long while training goes on
        if lr < LR_FLOOR * self._peak:
            if self._below_since is None:
                self._below_since = step
            dur = step - self._below_since
            before = self._below_since - (self._first_step or 0)
            if dur >= LR_FLOOR_STEPS and dur >= LR_FLOOR_SHARE * before:
                return self.make(state, ev, self._evidence(
                    f"LR {lr:.3g} is below 1e-3 of its peak {self._peak:.3g} since step {self._below_since} "
                    f"({dur} steps) while training goes on",
                    f"自第 {self._below_since} 步起学习率 {lr:.3g} 低于峰值 {self._peak:.3g} 的千分之一"
                    f"（已 {dur} 步），而训练仍在继续",
                    sched, lr=r4(lr), below_since=self._below_since, steps_below=dur))
        else:
            self._below_since = None
        return None

    def _set_after_step(self, state, ev, sched):
        """(c) step 1 at the peak, step 2 far below it, then rising again: the script sets
        each step's LR after ``optimizer.step()``, so every update uses the previous
        iteration's LR and the first one the optimizer's base LR (warm-up skipped)."""
        a = self._applied
        if 1 not in a or 2 not in a or 3 not in a or a[1] <= 0:
            return None
        if self._c_done:
            return None
        self._c_done = True
        if a[2] < 0.1 * a[1] and a[3] > a[2] and a[1] >= self._peak * 0.5:
            # info, not warning: true of this loop, but it costs one update at the base LR and a
            # schedule one step late; DFormer-family codebases train well like this, and a
            # warning on every one of their healthy runs would be crying wolf
            return self.make(state, ev, severity="info", evidence=self._evidence(
                f"the LR is set after optimizer.step(): step 1 used {a[1]:.3g} (the base LR: warm-up "
                f"skipped), step 2 used {a[2]:.3g}, step 3 {a[3]:.3g}",
                f"学习率在 optimizer.step() 之后才设置：第 1 步使用 {a[1]:.3g}（基础学习率，跳过了 warm-up），"
                f"第 2 步使用 {a[2]:.3g}，第 3 步 {a[3]:.3g}",
                sched, lr_applied_steps_1_3=[r4(a[1]), r4(a[2]), r4(a[3])]))
        return None
