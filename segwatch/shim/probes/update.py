"""The ``update`` probe: ||dw|| / ||w|| of a sampled optimizer step and which parameters never
change although they get gradients. A snapshot at the end of backward, compared in the
optimizer's post hook. Its cost (both parts) is the ``update`` entry of the sampler.

Both are judged on a fixed subsample of each parameter: the whole tensor up to ``SUB`` (1024)
elements, else ``SUB // RUN`` runs of ``RUN`` (64) consecutive elements spread evenly over
the flattened tensor (contiguous runs: a few cache lines each, where single strided elements
would each cost a cache miss). The probe copies and reads a few kB per parameter instead of
the whole model (a 31M-parameter UNet: 124 MB per copy). The gradient test uses the same
elements as the change test, so a parameter counts as "never stepped" only when the very
elements that should have moved did not. The ratio scales each parameter's subsample sums of
squares by ``numel / subsample size`` (an estimate of the full sums).

An element "should move" when its expected update is representable: lr * |g| above
``MARGIN`` units of its dtype's resolution of |w| (lr: the largest LR this step applied, g:
the gradient the step used, read in the optimizer's post hook: after AMP unscaling, clipping
and accumulation). A conv bias in front of a BatchNorm gets a gradient of rounding noise
(~1e-9; BN cancels it): plain SGD's lr * g then rounds away and the bias legitimately never
changes. The margin (32 eps, ~4e-6 relative for float32) covers momentum and rounding; a
real fault (parameters outside the optimizer, a frozen group while others train) has
gradients orders of magnitude above it. When every LR is 0 (a fault; or a warm-up's first
step) or none is readable (a device-tensor LR), an element counts when its |g| is above
``GRAD_REL`` of the largest sampled |g| (the BN-cancelled bias gradient is ~1e-7 of it).
"""
from __future__ import annotations

import math

import torch

from ..common import _OneThread

SUB = 1024
RUN = 64
MARGIN = 32.0       # expected update >= MARGIN * eps(dtype) * |w|: it must move
GRAD_REL = 1e-5     # with no LR to judge by: |g| below this share of the largest |g| is noise


def _flat(t: torch.Tensor) -> torch.Tensor:
    """``t`` flattened as a view of its storage where its layout allows: a channels_last
    tensor (``model.to(memory_format=torch.channels_last)``, as Pytorch-UNet does) in memory
    order; ``reshape`` would copy, and a cached copy of a parameter never changes."""
    t = t.detach()
    if t.is_contiguous():
        return t.view(-1)
    if t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last):
        return t.permute(0, 2, 3, 1).view(-1)
    if t.dim() == 5 and t.is_contiguous(memory_format=torch.channels_last_3d):
        return t.permute(0, 2, 3, 4, 1).view(-1)
    return t.reshape(-1)


class _Layout:
    """The subsample of every parameter, packed as the rows of one preallocated [n, W] buffer
    (zero-padded): each statistic is then one reduction over the buffer, not one op per
    parameter. ``weights`` scale a row's sums to the full tensor's."""
    __slots__ = ("ids", "steps", "dst_old", "dst_cur", "dst_grad", "old", "cur", "grad", "weights", "ptrs",
                 "views", "rel", "wflat")

    def __init__(self, ps: list[torch.Tensor]) -> None:
        self.ids = [id(p) for p in ps]
        k = SUB // RUN
        # 0: the whole tensor; else the distance between the starts of k runs of RUN elements
        self.steps = [0 if p.numel() <= SUB else (p.numel() - RUN) // (k - 1) for p in ps]
        counts = [p.numel() if st == 0 else SUB for p, st in zip(ps, self.steps)]
        dev = ps[0].device
        width = max(1, max(counts))
        self.old = torch.zeros(len(ps), width, dtype=torch.float32, device=dev)
        self.cur = torch.zeros_like(self.old)
        self.grad = torch.zeros_like(self.old)
        self.dst_old = self._rows(self.old, counts)
        self.dst_cur = self._rows(self.cur, counts)
        self.dst_grad = self._rows(self.grad, counts)
        self.weights = torch.tensor([p.numel() / max(1, n) for p, n in zip(ps, counts)], dtype=torch.float32,
                                    device=dev)
        # each element's row weight, flat: a weighted sum of squares over the buffer is one mv
        self.wflat = self.weights[:, None].expand(len(ps), width).reshape(-1).contiguous()
        # each row's smallest relative change its dtype represents, with the margin
        self.rel = torch.tensor([[MARGIN * (torch.finfo(p.dtype).eps if p.dtype.is_floating_point else 1.0)]
                                 for p in ps], dtype=torch.float32, device=dev)
        self.ptrs: list[int] = []
        self.views: list[torch.Tensor] = []

    def _rows(self, buf: torch.Tensor, counts: list[int]) -> list[torch.Tensor]:
        k = SUB // RUN
        return [buf[i, :n] if st == 0 else buf[i, :SUB].view(k, RUN)
                for i, (n, st) in enumerate(zip(counts, self.steps))]

    def sub(self, ts: list[torch.Tensor]) -> list[torch.Tensor]:
        k = SUB // RUN
        out = []
        for t, st in zip(ts, self.steps):
            f = _flat(t)
            out.append(f if st == 0 else f.as_strided((k, RUN), (st, 1)))
        return out

    def fill(self, dst: list[torch.Tensor], ts: list[torch.Tensor]) -> None:
        torch._foreach_copy_(dst, self.sub(ts))

    def fill_params(self, dst: list[torch.Tensor], ps: list[torch.Tensor]) -> None:
        """Like ``fill``, with the parameters' views kept while their storage stays (an
        optimizer updates in place; ``module.to()`` or ``p.data = ...`` makes new views)."""
        ptrs = [p.data_ptr() for p in ps]
        if ptrs != self.ptrs:
            self.ptrs, self.views = ptrs, self.sub(ps)
            # a view that is a copy (an exotic layout) would keep the old values: read anew
            if any(v.untyped_storage().data_ptr() != p.untyped_storage().data_ptr()
                   for v, p in zip(self.views, ps)):
                self.ptrs = []
        torch._foreach_copy_(dst, self.views)


class UpdateProbe:
    """Methods of ``Shim`` (segwatch.shim.runtime); the state lives on the Shim."""

    def _update_layout(self, ps: list[torch.Tensor]) -> _Layout:
        lay = getattr(self, "_upd_layout", None)
        if lay is None or len(lay.ids) != len(ps) or any(a != id(b) for a, b in zip(lay.ids, ps)):
            lay = self._upd_layout = _Layout(ps)
        return lay

    def _update_snapshot(self, s: int) -> None:
        """The parameters' subsamples before the optimizer step; compared in the optimizer's
        post hook."""
        self.sampler.mark("update", s)
        try:
            self._inject("update")
            with torch.no_grad(), _OneThread():
                ps = [p for _, p in self._root_params]
                if ps:
                    lay = self._update_layout(ps)
                    lay.fill_params(lay.dst_old, ps)
                    self._snap = (s, ps, lay)
        except Exception as exc:
            self._snap = None
            self._fail("update", exc)

    def _update_stats(self, snap, rec) -> None:
        """||dw|| / ||w|| of this optimizer step, and which parameters' values changed.

        A parameter changed when any element of its subsample differs from the snapshot taken
        at the end of backward (max |dw| > 0); norms would miss small updates of big tensors.
        """
        with torch.no_grad(), _OneThread():
            _, ps, lay = snap
            lay.fill_params(lay.dst_cur, ps)
            diff = lay.cur - lay.old
            # ||dw||^2 and ||w||^2 (each row's sums scaled to its tensor) in one mv: a handful of
            # ops in all; each op on these small buffers costs ~10-50 µs inside a training step
            if rec is not None and rec.step == self.step:
                sq = torch.stack([diff, lay.cur]).view(2, -1).square_()
                rec.dev["ratio"] = torch.mv(sq, lay.wflat).sqrt_()
            if len(ps) == len(self._root_params):
                gnz = self._should_move(ps, lay)
                ch = (diff != 0).any(1)      # NaN counts as a change: the step happened
                if self._changed is None or self._changed.shape != ch.shape:
                    self._changed, self._gnz = ch, gnz
                else:
                    self._changed |= ch
                    self._gnz |= gnz
                self._norm_snapshots += 1

    def _step_lr(self) -> float | None:
        """The largest LR of this optimizer step (read in its pre hook, else now); None when
        none is readable as a number."""
        lrs = self._lr_applied if self._lr_applied is not None else self._lrs()
        nums = [float(v) for v in lrs if isinstance(v, (int, float)) and math.isfinite(v)]
        return max(nums) if nums else None

    def _should_move(self, ps: list[torch.Tensor], lay: _Layout) -> torch.Tensor:
        """Per parameter: whether any subsampled element got a gradient this step whose update
        lr * |g| its dtype can represent (a non-finite gradient counts: the step went wrong)."""
        with_grad = [(d, p.grad) for d, p in zip(lay.dst_grad, ps)
                     if p.grad is not None and not p.grad.is_sparse]
        if len(with_grad) < len(ps):
            lay.grad.zero_()     # (else every row is overwritten; the padding stays zero)
        if with_grad:
            lay.fill([d for d, _ in with_grad], [g for _, g in with_grad])
        g = lay.grad.abs_()                              # (a scratch buffer: in place)
        lr = self._step_lr()
        if lr is not None and lr > 0:
            # lr * |g| > rel * |w| + 1e-30, as min over the row of (rel * |w| - lr * |g|) < -1e-30
            # (one fused add, no division by a tiny LR); a NaN gradient (or weight) keeps the
            # row's minimum NaN: it counts (the step went wrong)
            low = torch.add(lay.old.abs().mul_(lay.rel), g, alpha=-lr).amin(1)
            return (low < -1e-30) | low.isnan()
        # LR 0 (a fault, or the first step of a warm-up) or unreadable: no update to judge, so
        # a gradient counts unless it is negligible beside the largest one
        top_row = g.amax(1)                              # NaN propagates
        bad = ~torch.isfinite(top_row)
        top = torch.where(bad, 0.0, top_row).amax()
        return ((top_row > top * GRAD_REL) & (top_row > 0)) | bad
