"""The ``grads`` probe: at the end of a sampled backward, per-parameter gradient norms (one
``_foreach_norm``), parameters with/without gradients, modules left in eval mode, gradients
left over from before the backward; the ``step`` record that the read-back completes. Its
cost is the ``grads`` entry of the sampler."""
from __future__ import annotations

import math
from typing import Any

import torch

from ..common import _OneThread, _Rec


class GradsProbe:
    """Methods of ``Shim`` (segwatch.shim.runtime); the state lives on the Shim."""

    def _grad_params(self):
        if self._root_params:
            return self._root_params
        ps = []
        for opt in list(self._optims):
            for gi, g in enumerate(opt.param_groups):
                for pi, p in enumerate(g["params"]):
                    ps.append((f"group{gi}.{pi}", p))
        return ps

    def _post_backward(self) -> str | None:
        s = self.step
        self.sampler.mark("grads", s)
        rec_fields: dict[str, Any] = {"epoch": self.epoch, "backward_total": s,
                                      "optimizer_steps_total": self.optimizer_steps}
        dev: dict[str, torch.Tensor] = {}
        try:
            self._inject("grads")
            self._grad_stats(rec_fields, dev)
        except Exception as exc:
            self._fail("grads", exc)
            self._step_rec = None
            return "grads"
        if self._optims:
            rec_fields["lr"] = self._lrs()
        rec_fields["backwards_since_step"] = self._backwards_since_step
        rec_fields["grad_before_backward"] = None
        if self._grad_before is not None:
            dev["grad_before"] = self._grad_before
            self._grad_before = None
        rec_fields["scheduler"] = self._scheduler_field()
        self._step_rec = _Rec("step", s, rec_fields, dev, self._step_post)
        self._pending.append(self._step_rec)
        if self._on("update") and self._root_params and self.sampler.due("update", s):
            t0 = self._clock()
            self._update_snapshot(s)
            # (its time is added to the update's call, counted when the step compares)
            self.sampler.spend("update", self._clock() - t0, call=False)
        return "grads"

    def _grad_layout(self) -> tuple:
        """(params, names, parameter objects) of the watched parameters, built once per model:
        rebuilt only when the parameter list is another one (a new root, or the optimizers'
        list when no root is known, which is rebuilt on every call) or changed length."""
        params = self._grad_params()
        lay = getattr(self, "_grad_lay", None)
        if lay is None or lay[0] is not params or lay[3] != len(params):
            lay = self._grad_lay = (params, [n for n, _ in params], [p for _, p in params], len(params))
        return lay

    def _grad_stats(self, f: dict, dev: dict) -> None:
        params, names, plist, n = self._grad_layout()
        gs = [p.grad for p in plist]
        idx = [i for i, g in enumerate(gs) if g is not None and not g.is_sparse]
        full = len(idx) == n
        if full:
            # the common case: every parameter has a dense gradient; the cached name list is
            # shared (read-only) with the step record
            grads, gnames = gs, names
        else:
            grads, gnames = [gs[i] for i in idx], [names[i] for i in idx]
        f["with_grad"] = len(grads)
        f["no_grad"] = n - len(grads)
        if self._root_params:
            if len(self._had_grad) < n:
                self._had_grad.update(idx)
            mods = self._norm_mods
            f["eval_modules"] = [m.training for m in mods].count(False)
            f["norm_modules"] = len(mods)
            f["no_optim"] = self._no_optim_count(plist, idx, full)
        else:
            f["eval_modules"] = None
            f["norm_modules"] = None
            f["no_optim"] = None
        if not grads:
            return
        with torch.no_grad(), _OneThread():
            try:
                norms = torch._foreach_norm(grads)
                d0 = norms[0].dtype
                vec = torch.stack([x.float() for x in norms]) if any(x.dtype != d0 for x in norms) else torch.stack(norms).float()
            except Exception:
                vec = torch.stack([g.detach().float().norm().to(grads[0].device) for g in grads])
            scaler = self._scaler_ref() if self._scaler_ref is not None else None
            if scaler is not None and getattr(scaler, "_enabled", False) and getattr(scaler, "_scale", None) is not None:
                sc = scaler._scale.detach().float().reshape(()).clone()
                dev["scale"] = sc
                vec = vec / sc.to(vec.device)
            dev["gnorms"] = vec
        f["_names"] = gnames

    def _no_optim_count(self, plist: list, idx: list[int], full: bool) -> int | None:
        """Parameters with a gradient that no optimizer holds. The positions of the parameters
        missing from the optimizers are cached per (parameter list, optimizer id set)."""
        ids = self._optimizer_param_ids()
        if ids is None:
            return None
        miss = getattr(self, "_grad_miss", None)
        if miss is None or miss[0] is not plist or miss[1] is not ids:
            miss = self._grad_miss = (plist, ids, frozenset(i for i, p in enumerate(plist) if id(p) not in ids))
        if full:
            return len(miss[2])
        return sum(1 for i in idx if i in miss[2])

    def _optimizer_param_ids(self) -> set[int] | None:
        opts = list(self._optims)
        if not opts:
            return None
        sig = tuple((id(o), len(o.param_groups), sum(len(g["params"]) for g in o.param_groups)) for o in opts)
        if sig != self._opt_sig:
            self._opt_sig = sig
            self._opt_ids = {id(p) for o in opts for g in o.param_groups for p in g["params"]}
        return self._opt_ids

    def _step_post(self, rec: _Rec, vals: dict) -> dict:
        f = rec.fields
        names = f.pop("_names", None)
        g = vals.get("gnorms")
        if g is not None:
            tot = math.sqrt(sum(x * x for x in g)) if all(math.isfinite(x) for x in g) else float("nan")
            f["grad_norm"] = tot
            f["grad_nonfinite"] = sum(1 for x in g if not math.isfinite(x))
            pairs = sorted(zip(names or [], g), key=lambda p: -(p[1] if math.isfinite(p[1]) else float("inf")))[:32]
            f["layer_norms"] = [[n, v] for n, v in pairs]
        else:
            f.setdefault("grad_norm", None)
            f.setdefault("grad_nonfinite", None)
            f.setdefault("layer_norms", None)
        f["scale"] = vals["scale"][0] if "scale" in vals else None
        if "grad_before" in vals:
            v = vals["grad_before"][0]
            f["grad_before_backward"] = v if math.isfinite(v) else None
        f.setdefault("lr_applied", None)
        f.setdefault("backwards_since_step", None)
        f.setdefault("grad_before_backward", None)
        f.setdefault("scheduler", None)
        f["update_ratio"] = None
        if "ratio" in vals:
            dw, w = vals["ratio"]
            f["update_ratio"] = (dw / w) if w > 0 else None
        for k in ("lr", "no_optim", "never_stepped", "with_grad", "no_grad", "eval_modules", "norm_modules"):
            f.setdefault(k, None)
        f["sampled"] = True
        return f

    def _leftover_grad_norm(self) -> torch.Tensor:
        """Total L2 norm of the .grad tensors present before this backward (a device scalar;
        0 when there are none): non-zero on the first backward after a step means the
        gradients were not reset."""
        with torch.no_grad():
            grads = [g for g in (p.grad for p in self._grad_layout()[2]) if g is not None and not g.is_sparse]
            if not grads:
                return torch.zeros((), dtype=torch.float32)
            dev = grads[0].device
            norms = torch._foreach_norm(grads)
            return torch.stack([x.float().to(dev) for x in norms]).norm()
