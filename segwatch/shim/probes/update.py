"""The ``update`` probe: ||dw|| / ||w|| of a sampled optimizer step and which parameters never
change although they get gradients. A snapshot at the end of backward, compared in the
optimizer's post hook. Its cost (both parts) is the ``update`` entry of the sampler."""
from __future__ import annotations

import torch

from ..common import _OneThread


class UpdateProbe:
    """Methods of ``Shim`` (segwatch.shim.runtime); the state lives on the Shim."""

    def _update_snapshot(self, s: int) -> None:
        """The parameters before the optimizer step; compared in the optimizer's post hook."""
        self.sampler.mark("update", s)
        try:
            self._inject("update")
            with torch.no_grad(), _OneThread():
                ps = [p for _, p in self._root_params]
                if ps:
                    # which parameters have a non-zero (or non-finite) gradient now
                    gs = [p.grad if p.grad is not None and not p.grad.is_sparse else torch.zeros_like(p)
                          for p in ps]
                    gmax = torch.stack([x.float().to(ps[0].device)
                                        for x in torch._foreach_norm(gs, ord=float("inf"))])
                    self._snap = (s, ps, [p.detach().clone() for p in ps], gmax != 0)
        except Exception as exc:
            self._snap = None
            self._fail("update", exc)

    def _update_stats(self, snap, rec) -> None:
        """||dw|| / ||w|| of this optimizer step, and which parameters' values changed.

        Exact: a parameter changed when any of its elements differs from the snapshot taken
        at the end of backward (max |dw| > 0). Norms would miss small updates of big tensors.
        """
        with torch.no_grad(), _OneThread():
            _, ps, old, gnz = snap
            cur = [p.detach() for p in ps]
            diffs = torch._foreach_sub(cur, old)
            dev = cur[0].device
            dn = torch.stack([x.float().to(dev) for x in torch._foreach_norm(diffs)]).norm()
            wn = torch.stack([x.float().to(dev) for x in torch._foreach_norm(cur)]).norm()
            if rec is not None and rec.step == self.step:
                rec.dev["ratio"] = torch.stack([dn, wn])
            if len(ps) == len(self._root_params):
                dmax = torch.stack([x.float().to(dev) for x in torch._foreach_norm(diffs, ord=float("inf"))])
                ch = dmax != 0                       # NaN counts as a change: the step happened
                if self._changed is None or self._changed.shape != ch.shape:
                    self._changed, self._gnz = ch, gnz
                else:
                    self._changed = self._changed | ch
                    self._gnz = self._gnz | gnz
                self._norm_snapshots += 1
