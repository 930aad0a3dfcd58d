"""Optimizer and LR scheduler hooks: optimizer step counting, the LRs the update used (step
pre-hook), the scheduler whose ``step()`` is called. Python reads only: base cost."""
from __future__ import annotations

import weakref

from ..common import _group_lrs, _Rec


class OptimizerHooks:
    """Methods of ``Shim`` (segwatch.shim.runtime); the state lives on the Shim."""

    def _opt_pre(self, optimizer, args, kwargs):
        """The LRs this update uses, read just before it (a script that changes the LR after
        ``step()`` shows it here: ``lr_applied`` differs from what it meant to set)."""
        if not self.installed or not self._on("lr_applied"):
            return None
        t0 = self._clock()
        try:
            if self.fault:
                self._inject("lr_applied")
            if optimizer not in self._optims:
                self._optims.add(optimizer)          # (the light record below reads its LRs)
            rec = self._step_rec
            if (rec is None or rec.step != self.step) and self.optimizer_steps >= 3 and self._snap is None:
                # no record of this step and no update comparison wants the LRs: an unsampled
                # step reads nothing (base cost)
                self.sampler.spend(None, self._clock() - t0)
                return None
            lrs = _group_lrs(optimizer)
            if self._lr_applied is None:
                self._lr_applied = lrs
            else:
                self._lr_applied = self._lr_applied + lrs     # several optimizers in one step
            if rec is not None and rec.step == self.step:
                rec.fields["lr_applied"] = self._lr_applied
            elif self.optimizer_steps < 3:
                # optimizer steps 1..3 always carry it (a warm-up skipped by an LR set after
                # step() shows there): a light step record, its loss filled at read-back
                rec = _Rec("step", self.step, self._light_fields(self.step), {}, None)
                rec.fields["lr_applied"] = self._lr_applied
                self._step_rec = rec
                self._pending.append(rec)
        except Exception as exc:
            self._fail("lr_applied", exc)
        self.sampler.spend(None, self._clock() - t0)
        return None

    def _opt_post(self, optimizer, args, kwargs):
        if not self.installed or not self._on("optimizer"):
            return None
        t0 = self._clock()
        probe = None
        try:
            self.optimizer_steps += 1
            self._backwards_since_step = 0
            rec = self._step_rec
            if rec is not None:
                if self.fault:
                    self._inject("optimizer")
                if optimizer not in self._optims:
                    self._optims.add(optimizer)
                if rec.step == self.step:
                    rec.fields["optimizer_steps_total"] = self.optimizer_steps
                    if "lr" not in rec.fields:
                        rec.fields["lr"] = self._lrs()
            snap = self._snap
            if snap is not None:
                self._snap = None
                probe = "update"
                try:
                    self._update_stats(snap, rec)
                except Exception as exc:
                    self._fail("update", exc)
        except Exception as exc:
            self._fail("optimizer", exc)
        if self._pending or self._losses:
            self._maybe_readback()
        self.sampler.spend(probe, self._clock() - t0)
        return None

    def _patch_schedulers(self) -> None:
        """Count ``step()`` calls of LR schedulers (base class and the subclasses that
        override ``step``); the nested calls of SequentialLR / ChainedScheduler count once."""
        from torch.optim import lr_scheduler as L
        base = getattr(L, "LRScheduler", None) or getattr(L, "_LRScheduler")
        shim = self
        classes = [c for c in vars(L).values()
                   if isinstance(c, type) and issubclass(c, base) and "step" in c.__dict__]
        if getattr(L, "ReduceLROnPlateau", None) is not None and L.ReduceLROnPlateau not in classes \
                and "step" in L.ReduceLROnPlateau.__dict__:
            classes.append(L.ReduceLROnPlateau)
        for cls in classes:
            orig = cls.__dict__["step"]

            def step(sched, *args, _orig=orig, **kwargs):
                if shim._sched_depth == 0 and shim.installed:
                    try:
                        shim._on_scheduler_step(sched)
                    except Exception as exc:
                        shim._fail("scheduler", exc)
                shim._sched_depth += 1
                try:
                    return _orig(sched, *args, **kwargs)
                finally:
                    shim._sched_depth -= 1

            self._patch(cls, "step", step)

    def _on_scheduler_step(self, sched) -> None:
        if not self._on("scheduler"):
            return
        if getattr(sched, "_step_count", None) == 0:
            return              # the step() a scheduler makes in its own constructor
        cur = self._sched_ref() if self._sched_ref is not None else None
        if cur is None:
            if self._sched_cls is not None:
                return          # the first scheduler is gone; keep its record
            self._sched_ref = weakref.ref(sched)
            self._sched_cls = type(sched).__name__
            self._sched_steps = 1
        elif cur is sched:
            self._sched_steps += 1

    def _scheduler_field(self) -> dict | None:
        if self._sched_cls is None:
            return None
        return {"cls": self._sched_cls, "steps_total": self._sched_steps}

    def _lrs(self) -> list:
        out = []
        for o in list(self._optims):
            out += _group_lrs(o)
        return out

    def _light_fields(self, s: int) -> dict:
        """Fields of a step event that no probe sampled (counters, LRs; the loss is added
        at read-back)."""
        return dict(backward_total=s, grad_norm=None, grad_nonfinite=None, lr=self._lrs(),
                    layer_norms=None, update_ratio=None, no_optim=None, with_grad=None, no_grad=None,
                    eval_modules=None, norm_modules=None, scale=None, sampled=False,
                    grad_before_backward=None, backwards_since_step=None, lr_applied=None,
                    scheduler=self._scheduler_field())
