"""The loss function of the training: which one, and how it is configured (``lossfn`` events).

What is patched: ``torch.nn.modules.loss._Loss.__call__`` (every torch loss module, and user
losses derived from ``_Loss``) and ``torch.nn.functional.cross_entropy`` / ``nll_loss`` (the
functional form, and what mmseg's and most codebases' own loss modules call). A call made
inside another observed call (``nn.CrossEntropyLoss`` calls ``F.cross_entropy``) is not
counted again.

Cost: the wrapper compares two integers and passes through, except on the few training steps
it observes: the first steps until the configuration is seen unchanged on ``STABLE`` steps,
then one step every ``PERIOD`` steps. On an observed step it reads each call's configuration,
the class-weight vector (once per weight tensor version) and the target's values outside
``0..C-1`` (the one thing that changes per batch: a target 255 with ``ignore_index=-100``).
An event is sent when a call's configuration is new (before the call runs: the call may
raise, "Target 255 is out of bounds"), and when a step's set of calls changes.
"""
from __future__ import annotations

import weakref
from typing import Any

import torch

from .common import _AllowSync

#: consecutive observed steps with the same configuration before observing only periodically
STABLE = 3
#: observe one training step in this many once the configuration is stable
PERIOD = 100
#: loss calls observed per step at most (a loop of loss calls without backward stays cheap)
MAX_CALLS = 16
#: no-grad (evaluation) loss calls looked at per step, for a target the loss will reject
EVAL_CALLS = 2
#: the full class-weight vector is sent up to this many classes
WEIGHT_VALUES_MAX = 256
#: target values outside 0..C-1 named per call
TARGET_OOR_MAX = 8

# functional losses: positional parameter names after (input, target)
_FUNCTIONAL = {
    "cross_entropy": ("weight", "size_average", "ignore_index", "reduce", "reduction", "label_smoothing"),
    "nll_loss": ("weight", "size_average", "ignore_index", "reduce", "reduction"),
}
_FUNCTIONAL_DEFAULTS = {
    "cross_entropy": {"ignore_index": -100, "reduction": "mean", "label_smoothing": 0.0},
    "nll_loss": {"ignore_index": -100, "reduction": "mean"},
}
# inside torch.compile's tracing the wrappers pass straight through: reading the shim's step
# counter there would become a guard and recompile the graph on every step
_compiling = getattr(getattr(torch, "compiler", None), "is_compiling", None) or (lambda: False)
# plain configuration attributes read from a loss module (ints, floats, strings, bools)
_ATTRS = ("ignore_index", "label_smoothing", "reduction", "alpha", "gamma", "smooth", "eps")


def weight_summary(w: Any) -> dict | None:
    """n, min, max, max/median ratio, argmax (and the values up to WEIGHT_VALUES_MAX) of a
    class-weight tensor; None when there is none."""
    if not isinstance(w, torch.Tensor) or w.numel() == 0:
        return None
    with _AllowSync():
        v = w.detach().float().flatten().cpu()
    n = int(v.numel())
    med = float(v.median())
    mx = float(v.max())
    out = {"n": n, "min": float(v.min()), "max": mx, "median": med,
           "ratio": (mx / med) if med > 0 else None, "argmax": int(v.argmax())}
    if n <= WEIGHT_VALUES_MAX:
        out["values"] = [round(float(x), 6) for x in v.tolist()]
    return out


def output_structure(out: Any) -> dict | None:
    """How a model's output is built: a tensor, a tuple/list of n items, or a dict's keys."""
    if isinstance(out, torch.Tensor):
        return {"kind": "tensor", "shape": list(out.shape)}
    if isinstance(out, (tuple, list)):
        return {"kind": type(out).__name__, "n": len(out),
                "shapes": [list(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__ for t in out[:8]]}
    if isinstance(out, dict) or hasattr(out, "keys"):
        try:
            keys = [str(k) for k in list(out.keys())[:16]]
        except Exception:
            return None
        return {"kind": "dict", "keys": keys}
    return None


class LossWatch:
    """Methods of ``Shim`` (segwatch.shim.runtime); state lives on the Shim."""

    _lf_next = 0          # the wrapper observes while shim.step >= this
    _lf_depth = 0         # inside an observed loss call (nested calls are not counted)

    def _install_lossfn(self) -> None:
        self._lf_cur_step: int | None = None
        self._lf_group: list[dict] = []
        self._lf_known: set = set()             # per-call signatures already sent
        self._lf_last_group = None              # signature of the last step's calls sent
        self._lf_stable = 0
        self._lf_weights: dict = {}             # (id, version) -> summary
        self._lf_output: dict | None = None
        self._lf_out_handle = None
        self._lf_next = 0
        self._lf_depth = 0
        self._lf_eval_step: int | None = None   # no-grad loss calls described in this step
        self._lf_eval_n = 0
        shim = self
        from torch.nn.modules import loss as lossmod
        orig_call = lossmod._Loss.__call__

        def loss_call(module, *args, **kwargs):
            if _compiling():
                return orig_call(module, *args, **kwargs)
            if shim._lf_depth == 0 and shim.step >= shim._lf_next and shim.installed and shim._on("lossfn"):
                shim._lf_observe(module, None, args, kwargs)
            shim._lf_depth += 1
            try:
                return orig_call(module, *args, **kwargs)
            finally:
                shim._lf_depth -= 1

        self._patch(lossmod._Loss, "__call__", loss_call)
        F = torch.nn.functional
        for name in _FUNCTIONAL:
            self._patch(F, name, self._lf_functional(name, getattr(F, name)))

    def _lf_functional(self, name: str, orig):
        shim = self

        def functional(*args, **kwargs):
            if _compiling():
                return orig(*args, **kwargs)
            if shim._lf_depth == 0 and shim.step >= shim._lf_next and shim.installed and shim._on("lossfn"):
                shim._lf_observe(None, name, args, kwargs)
            shim._lf_depth += 1
            try:
                return orig(*args, **kwargs)
            finally:
                shim._lf_depth -= 1

        functional.__name__ = name
        functional.__doc__ = orig.__doc__
        functional.__wrapped__ = orig
        return functional

    # ------------------------------------------------------------------ observation
    def _lf_observe(self, module, fname: str | None, args: tuple, kwargs: dict) -> None:
        t0 = self._clock()
        try:
            if self.fault:
                self._inject("lossfn")
            if not torch.is_grad_enabled():
                # an evaluation loss: not the training's configuration, unless its target will
                # make it raise (Lightning's sanity check runs validation_step's loss first).
                # The first EVAL_CALLS of a step only: a validation pass calls it per batch
                if self._lf_eval_step != self.step:
                    self._lf_eval_step, self._lf_eval_n = self.step, 0
                self._lf_eval_n += 1
                if self._lf_eval_n > EVAL_CALLS:
                    return
                desc = self._lf_describe(module, fname, args, kwargs)
                if desc.get("target_oor"):
                    calls = [{k: v for k, v in desc.items() if k != "sig"}]
                    self._emit("lossfn", step=self.step, calls=calls, calls_per_step=None, output=None)
                return
            step = self.step
            if step != self._lf_cur_step:
                if self._lf_group:
                    self._lf_close()
                if step < self._lf_next:
                    return
                self._lf_cur_step = step
                self._lf_group = []
            desc = self._lf_describe(module, fname, args, kwargs)
            self._lf_group.append(desc)
            sig = desc["sig"]
            if sig not in self._lf_known or desc.get("target_oor"):
                # a new configuration (or a target the loss will choke on): say it now, before
                # the call runs
                self._lf_known.add(sig)
                self._lf_emit(calls_per_step=None)
            if self._lf_output is None and self._lf_out_handle is None:
                self._lf_watch_output()
            if len(self._lf_group) >= MAX_CALLS:
                self._lf_next = step + 1       # enough of this step: wait for the next one
        except Exception as exc:
            self._fail("lossfn", exc)
        finally:
            self.sampler.spend("oneoff", self._clock() - t0)

    def _lf_close(self) -> None:
        group = tuple(d["sig"] for d in self._lf_group)
        if group != self._lf_last_group:
            self._lf_emit(calls_per_step=len(self._lf_group))
            self._lf_last_group = group
            self._lf_stable = 0
        else:
            self._lf_stable += 1
        step = self._lf_cur_step or 0
        self._lf_next = step + (PERIOD if self._lf_stable >= STABLE - 1 else 1)
        self._lf_group = []

    def _lf_emit(self, calls_per_step: int | None) -> None:
        calls = [{k: v for k, v in d.items() if k != "sig"} for d in self._lf_group]
        self._emit("lossfn", step=self.step, calls=calls, calls_per_step=calls_per_step,
                   output=self._lf_output)

    def _lf_describe(self, module, fname: str | None, args: tuple, kwargs: dict) -> dict:
        if module is not None:
            cls = type(module)
            mod = cls.__module__ or ""
            name = ("nn." + cls.__name__) if mod.startswith("torch.nn") else f"{mod}.{cls.__qualname__}"
            conf = {}
            for a in _ATTRS:
                v = getattr(module, a, None)
                if isinstance(v, (int, float, str, bool)):
                    conf[a] = v
            weight = getattr(module, "weight", None)
            pos_weight = getattr(module, "pos_weight", None)
            inp = args[0] if args else kwargs.get("input")
            target = args[1] if len(args) > 1 else kwargs.get("target")
        else:
            name = "F." + str(fname)
            params = dict(zip(_FUNCTIONAL[fname], args[2:]))
            params.update({k: v for k, v in kwargs.items() if k not in ("input", "target")})
            conf = dict(_FUNCTIONAL_DEFAULTS[fname])
            for k in ("ignore_index", "reduction", "label_smoothing"):
                v = params.get(k)
                if isinstance(v, (int, float, str)) and not isinstance(v, bool):
                    conf[k] = v
            weight, pos_weight = params.get("weight"), None
            inp = args[0] if args else kwargs.get("input")
            target = args[1] if len(args) > 1 else kwargs.get("target")
        d: dict = {"fn": name, **conf}
        d["weight"] = self._lf_weight(weight)
        if isinstance(pos_weight, torch.Tensor):
            d["pos_weight"] = self._lf_weight(pos_weight)
        if isinstance(inp, torch.Tensor):
            d["input_shape"] = list(inp.shape)
        if isinstance(target, torch.Tensor):
            d["target_dtype"] = str(target.dtype).replace("torch.", "")
            d["target_oor"] = self._lf_target_oor(inp, target, conf.get("ignore_index"))
        wsig = None if d["weight"] is None else tuple(d["weight"].get("values") or (d["weight"]["n"], d["weight"]["max"]))
        d["sig"] = (name, tuple(sorted((k, v) for k, v in conf.items())), wsig)
        return d

    def _lf_weight(self, w: Any) -> dict | None:
        if not isinstance(w, torch.Tensor):
            return None
        key = (id(w), getattr(w, "_version", 0))
        s = self._lf_weights.get(key)
        if s is None:
            s = weight_summary(w)
            if len(self._lf_weights) > 64:
                self._lf_weights.clear()
            self._lf_weights[key] = s
        return s

    @staticmethod
    def _lf_target_oor(inp: Any, target: torch.Tensor, ignore: Any) -> list[int] | None:
        """Class-index target values outside 0..C-1 that are not the loss's ignore_index (they
        make the loss raise, or trigger a device-side assert on CUDA); None when the target is
        not a class-index map."""
        if not isinstance(inp, torch.Tensor) or inp.dim() < 2 or target.is_floating_point() \
                or target.dtype == torch.bool or target.numel() == 0:
            return None
        C = int(inp.shape[1])
        t = target.detach()
        bad = (t < 0) | (t >= C)
        if isinstance(ignore, int) and not isinstance(ignore, bool):
            bad &= t != ignore
        with _AllowSync():
            if not bool(bad.any()):
                return []
            vals = torch.unique(t[bad])[:TARGET_OOR_MAX]
            return [int(v) for v in vals.tolist()]

    def _lf_watch_output(self) -> None:
        """How the training model's output is structured: one forward hook on the root, removed
        after the first training call."""
        root = self._root() if hasattr(self, "_root") else None
        if root is None:
            return
        ref = weakref.ref(self)

        def once(module, args, output):
            shim = ref()
            if shim is None:
                return None
            try:
                if torch.is_grad_enabled():
                    shim._lf_output = output_structure(output)
                    h, shim._lf_out_handle = shim._lf_out_handle, False
                    if h:
                        h.remove()
            except Exception as exc:
                shim._fail("lossfn", exc)
            return None

        self._lf_out_handle = root.register_forward_hook(once)


__all__ = ["LossWatch", "weight_summary", "output_structure"]
