"""Evaluation passes, observed whole: every batch's predictions paired with its labels in a
confusion matrix, the pass's batch/preds records read back once at its end, and one
``eval`` event per pass (automatic: a loader without backward passes; explicit:
``segwatch.log_eval``)."""
from __future__ import annotations

from typing import Any

import torch

from . import stats as S
from .common import _AllowSync, _EvalPass, fetch, _Loader, _OneThread


class Evaluation:
    """Methods of ``Shim`` (segwatch.shim.runtime); the state lives on the Shim."""

    def _start_eval(self, ls: _Loader | None, explicit: bool = False) -> None:
        self._eval = _EvalPass(self._eval_index, ls, self.step, explicit)
        self._eval_index += 1
        self.sampler.skip_wall()
        er = self._eval_root_ref() if self._eval_root_ref is not None else None
        if ls is not None and self._root_ref is not None and er is None and not self._disc_handles:
            # does evaluation run the training model, or another one (an EMA copy)? Watch
            # the first forward of the pass to find out.
            self._disc_eval = True
            self._start_discovery()
        if self._on("evaltrace"):
            try:
                self._inject("evaltrace")
                self._tracer.start()
            except Exception as exc:
                self._fail("evaltrace", exc)

    def _make_cm(self):
        C = self.num_classes
        if C is None:
            return None
        try:
            from segwatch.core.metrics import ConfusionMatrix
            return ConfusionMatrix(C, self.ignore)
        except Exception:  # core not available: private device accumulator
            return S.DeviceConfusion(C, self.ignore)

    def _end_eval(self, aborted: bool) -> None:
        ev = self._eval
        if ev is None:
            return
        self._eval = None
        if self._disc_eval:
            self._disc_eval = False
            self._stop_discovery()
        t0 = self._clock()
        exc = None
        if self._tracer.active or self._tracer.last is not None:
            try:
                exc = self._tracer.stop()
            except Exception as e:
                self._fail("evaltrace", e)
        self.sampler.skip_wall()
        # batch / preds records of the pass: one read-back
        sync = _AllowSync().__enter__()      # one read-back per evaluation
        try:
            with _OneThread():
                self._flush_records(ev.records)
        except Exception as e:
            self._fail("eval", e)
        fields: dict[str, Any] = {"index": ev.index, "batches": ev.batches,
                                  "expected": ev.loader.length if ev.loader is not None else None,
                                  "aborted": bool(aborted), "exception": exc, "num_classes": self.num_classes,
                                  "ignore_index": self.ignore if self.ignore is not None else self.ignore_cfg,
                                  "matrix": None, "oor": None, "size_mismatch": ev.size_mismatch_extra, "pixels": None,
                                  "loader": ev.loader.num if ev.loader is not None else None,
                                  "paired": ev.paired, "explicit": ev.explicit, "started_step": ev.step}
        if getattr(ev, "sanity", False):
            fields["sanity"] = True
        try:
            cm = ev.cm
            if cm is not None:
                if isinstance(cm, S.DeviceConfusion):
                    if cm.mat is not None:
                        m, oor, poor = fetch([cm.mat, cm.oor, cm.pred_oor])
                        C = cm.C
                        fields["matrix"] = [[int(x) for x in m[r * C:(r + 1) * C]] for r in range(C)]
                        fields["oor"] = int(oor[0])
                        fields["pred_oor"] = int(poor[0])
                        fields["pixels"] = int(sum(m))
                    fields["size_mismatch"] += cm.size_mismatch
                else:
                    summ = cm.summary()
                    if cm.updates - cm.size_mismatch > 0:
                        fields["matrix"] = cm.matrix.tolist()
                    fields["oor"] = summ["oor"]
                    fields["size_mismatch"] += summ["size_mismatch"]
                    fields["pixels"] = summ["pixels"]
                    fields.update(oor_values=summ["oor_values"], pred_oor=summ["pred_oor"],
                                  ignored=summ["ignored"], fractional=summ["fractional"])
        except Exception as e:
            self._fail("eval", e)
        finally:
            sync.__exit__(None, None, None)
        self._emit("eval", step=self.step, **fields)
        self.sampler.spend("eval", self._clock() - t0)

    def log_eval(self, logits: Any, labels: Any) -> None:
        """Explicit evaluation batch (public API)."""
        if not self.installed or not self._on("eval"):
            return
        try:
            t0 = self._clock()
            if self._eval is None:
                self._start_eval(None, explicit=True)
            ev = self._eval
            if not ev.explicit:
                ev.explicit = True          # explicit batches replace the automatic pairing
                ev.cm = None
                ev.paired = 0
            if not isinstance(logits, torch.Tensor):
                logits = torch.as_tensor(logits)
            if not isinstance(labels, torch.Tensor):
                labels = torch.as_tensor(labels)
            if self.num_classes is None and logits.dim() == 4:
                self.num_classes = int(logits.shape[1])
            if ev.loader is None:
                ev.batches += 1
            with torch.no_grad(), _OneThread():
                pred = S.class_argmax(logits) if logits.dim() == 4 else logits
                self._eval_update(ev, pred, labels)
            self.sampler.spend("eval", self._clock() - t0)
        except Exception as exc:
            self._fail("eval", exc)

    def end_eval(self) -> None:
        if self._eval is not None:
            try:
                self._end_eval(aborted=False)
            except Exception as exc:
                self._fail("eval", exc)

    def _eval_update(self, ev: _EvalPass, pred: torch.Tensor, lab: torch.Tensor) -> None:
        if ev.cm is None:
            ev.cm = self._make_cm()
            if ev.cm is None:
                return
        if lab.device != pred.device:
            lab = lab.to(pred.device, non_blocking=True)
        ev.cm.update(pred, lab)
        ev.paired += 1
