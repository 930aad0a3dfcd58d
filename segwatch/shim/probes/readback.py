"""The ``readback`` probe: every step's loss copied into a preallocated device buffer, and one
packed transfer per device of everything pending (records, losses, the never-changed mask) when
the sampler says so; then the events. Its cost is the ``readback`` entry of the sampler; the
``overhead`` event is sent from here too."""
from __future__ import annotations

import math
import time

import torch

from ..common import _AllowSync, fetch, LOSS_BUF, _OneThread, _Rec


class Readback:
    """Methods of ``Shim`` (segwatch.shim.runtime); the state lives on the Shim."""

    def _keep_loss(self, s: int, loss: torch.Tensor) -> None:
        l = loss.detach()
        dev = l.device
        if dev != self._loss_dev:
            if self._losses:
                self._readback()
            self._loss_dev = dev
            self._loss_buf = None if dev.type == "cpu" else torch.empty(LOSS_BUF, dtype=torch.float32, device=dev)
        if len(self._losses) >= LOSS_BUF:
            self.sampler.request_readback()
            self._maybe_readback()
            if len(self._losses) >= LOSS_BUF:
                return
        if self._loss_buf is None:
            # CPU: reading the value costs no device sync and is ~4x cheaper here than a copy
            # into a buffer slot (~14 against ~44-68 µs measured inside a training step)
            self._loss_host.append(l.item() if l.numel() == 1 else l.float().mean().item())
        else:
            if l.numel() != 1:
                l = l.float().mean()
            self._loss_buf[len(self._losses)] = l      # a device copy, no host sync
        self._losses.append(s)

    def _maybe_readback(self) -> None:
        if not (self._pending or self._losses):
            return
        if not self._on("readback"):
            # nothing can be read back any more: keep memory bounded
            self._pending = []
            self._losses = []
            self._loss_host = []
            self._span_marks = []
            self._step_rec = None
            return
        if self.sampler.readback_due(self.step):
            try:
                self._readback()
            except Exception as exc:
                self._fail("readback", exc)
                self._pending = []
                self._losses = []
                self._loss_host = []
                self._step_rec = None

    def _gather(self, recs: list[_Rec], extra: list[torch.Tensor]) -> tuple[dict, list[list[float]]]:
        """One read-back (one transfer per device) of the records' tensors and ``extra``."""
        for r in recs:
            d = r.fields.pop("_deferred", None)
            if d is not None and r.fields.get("labels") is not None and self.num_classes is not None:
                with torch.no_grad(), _OneThread():
                    self._label_dev(d, r.dev, r.fields)
        tensors: list[torch.Tensor] = []
        slots: list[tuple[_Rec, str]] = []
        for r in recs:
            for k, t in r.dev.items():
                tensors.append(t)
                slots.append((r, k))
        vals = fetch(tensors + extra) if (tensors or extra) else []
        per: dict[int, dict[str, list[float]]] = {}
        for (r, k), v in zip(slots, vals):
            per.setdefault(id(r), {})[k] = v
        return per, vals[len(tensors):]

    def _emit_recs(self, recs: list[_Rec], per: dict) -> None:
        for r in recs:
            try:
                fields = r.post(r, per.get(id(r), {})) if r.post else r.fields
                self._emit(r.type, step=r.step, **fields)
            except Exception as exc:
                self._fail(r.type if r.type != "step" else "grads", exc)

    def _flush_records(self, recs: list[_Rec]) -> None:
        per, _ = self._gather(recs, [])
        self._emit_recs(recs, per)

    def _readback(self, final: bool = False) -> None:
        if not self._pending and not self._losses and not final:
            return
        t0 = self._clock()
        # one intra-op thread for the whole read-back: one set_num_threads toggle, not one
        # per part (each is ~4-60 µs); no training op runs until it returns
        with _OneThread():
            self._inject("readback")
            self.sampler.mark("readback", self.step)
            recs = self._pending
            self._pending = []
            losses = self._losses
            self._losses = []
            host = self._loss_host
            self._loss_host = []
            if self._step_rec is not None and self._step_rec in recs:
                self._step_rec = None
            extra = []
            if losses and self._loss_buf is not None:
                extra = [self._loss_buf[:len(losses)]]
            changed = self._changed if (self._changed is not None and self._norm_snapshots >= 2) else None
            if changed is not None:
                # parameters that had a non-zero gradient at some compared step and never changed
                extra.append(self._gnz & ~changed)
            # one transfer per device for every pending record, the losses and the change mask
            with _AllowSync():
                per, out_extra = self._gather(recs, extra)
            step_recs = [r for r in recs if r.type == "step"]
            loss_vals: dict[int, float] = {}
            if losses:
                loss_vals = dict(zip(losses, host if self._loss_buf is None else out_extra[0]))
            never = None
            if changed is not None:
                never = int(sum(out_extra[-1]))
            first_nf = None
            for s in sorted(loss_vals):
                if not math.isfinite(loss_vals[s]):
                    self.loss_nonfinite_total += 1
                    if first_nf is None:
                        first_nf = s
            nf_before: dict[int, int] = {}
            run = self.loss_nonfinite_total - sum(1 for v in loss_vals.values() if not math.isfinite(v))
            for s in sorted(loss_vals):
                if not math.isfinite(loss_vals[s]):
                    run += 1
                nf_before[s] = run
            base = {"backward_total": self.step, "optimizer_steps_total": self.optimizer_steps,
                    "loss_nonfinite_total": self.loss_nonfinite_total, "epoch": self.epoch,
                    "never_stepped": never}
            rec_steps = {r.step for r in step_recs}
            light = []
            if losses:
                last = max(loss_vals)
                if last not in rec_steps:
                    light.append(last)
                if first_nf is not None and first_nf not in rec_steps and first_nf not in light:
                    light.append(first_nf)
            for r in step_recs:
                r.fields.setdefault("loss", loss_vals.get(r.step))
                r.fields.update({k: v for k, v in base.items() if k not in r.fields})
                if r.step in nf_before:
                    r.fields["loss_nonfinite_total"] = nf_before[r.step]
            gpu_side = self._gpu_side({r.step for r in step_recs} | set(light))
            for r in step_recs:
                for k, v in gpu_side.get(r.step, {}).items():
                    r.fields.setdefault(k, v)
            # everything in step order: a first non-finite loss at step 29 must reach the rules
            # before the sampled step 32 that already counts it (they date a finding by the
            # event that shows it)
            order = sorted([(r.step, i, r) for i, r in enumerate(recs)] + [(s, len(recs), None) for s in light],
                           key=lambda x: (x[0], x[1]))
            with _AllowSync():
                for s, _, r in order:
                    if r is not None:
                        self._emit_recs([r], per)
                        continue
                    f = dict(base)
                    f.update(self._light_fields(s))
                    f.update(gpu_side.get(s, {}))
                    f.update(loss=loss_vals.get(s), loss_nonfinite_total=nf_before.get(s, self.loss_nonfinite_total))
                    self._emit("step", step=s, **f)
        self.sampler.spend("readback", self._clock() - t0)

    def _gpu_side(self, steps: set[int]) -> dict[int, dict]:
        """Issue 19's step fields for the step events of this read-back: ``data_wait`` / ``wall``
        since the previous step event, and ``cuda_mem`` (host-side allocator counters, no sync)
        on the last one when the losses live on a CUDA device."""
        out: dict[int, dict] = {s: {"data_wait": None, "wall": None, "cuda_mem": None} for s in steps}
        if not steps or not self._on("gpu_side"):
            return out
        try:
            last = max(steps)
            marks = {m[0]: m for m in self._span_marks if m[0] <= last}
            self._span_marks = [m for m in self._span_marks if m[0] > last]
            for s in sorted(steps):
                m = marks.get(s)
                if m is None:
                    continue
                prev = self._span_prev
                if prev is not None and m[2] > prev[1]:
                    out[s]["data_wait"] = round(max(0.0, m[1] - prev[0]), 6)
                    out[s]["wall"] = round(m[2] - prev[1], 6)
                self._span_prev = (m[1], m[2])
            buf = self._loss_buf
            if buf is not None and buf.device.type == "cuda":
                dev = buf.device
                out[last]["cuda_mem"] = {"allocated": int(torch.cuda.memory_allocated(dev)),
                                         "reserved": int(torch.cuda.memory_reserved(dev)),
                                         "max_allocated": int(torch.cuda.max_memory_allocated(dev))}
        except Exception as exc:
            self._fail("gpu_side", exc)
        return out

    def _emit_overhead(self, final: bool = False) -> None:
        now = time.monotonic()
        if not final and self._overhead_events >= 10 and now - self._last_overhead_t < 2.0:
            return
        self._last_overhead_t = now
        self._overhead_events += 1
        sm = self.sampler
        share = sm.last_share if sm.last_share is not None else (sm.share_total() or 0.0)
        self._emit("overhead", step=self.step, share=share, budget=sm.budget, intervals=sm.intervals(),
                   dropped=self.emitter.dropped, share_total=sm.share_total(), share_steady=sm.share_steady(),
                   windows=sm.windows,
                   warmup=self.step <= sm.warmup, eval_s=round(sm.eval_spent, 6),
                   cost_ms={p: (round(c * 1e3, 4) if c is not None else None) for p, c in sm.cost.items()},
                   base_us=round(sm.last_base * 1e6, 1) if sm.last_base is not None else None,
                   step_ms=round(sm.last_step_time * 1e3, 3) if sm.last_step_time else None,
                   over_budget=sm.over_budget, gaps=sm.gaps(), max_interval=sm.max_interval,
                   final=final)
