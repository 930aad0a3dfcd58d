"""Pieces shared by the shim's rooms: the per-batch / per-record / per-pass state, the
packed read-back (``fetch``), and the context managers around the shim's own tensor work."""
from __future__ import annotations

import math
import weakref
from typing import Any, Callable

import torch

from . import stats as S

# every step's loss is copied into a preallocated device buffer of this many entries
LOSS_BUF = 4096
_NORM_TYPES: tuple = ()


def _norm_types() -> tuple:
    global _NORM_TYPES
    if not _NORM_TYPES:
        nn = torch.nn
        _NORM_TYPES = (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm,
                       nn.modules.dropout._DropoutNd)
    return _NORM_TYPES


class _OneThread:
    """Run the shim's small CPU statistics on one intra-op thread.

    Dozens of tiny reductions on a multi-threaded OpenMP pool pay a thread wake-up each; on a
    busy machine that costs 10-30x the work itself. Training ops never run while a hook body
    runs (same thread), so the previous setting is restored before they continue.
    """
    __slots__ = ("n",)

    def __enter__(self):
        self.n = torch.get_num_threads()
        if self.n > 1:
            torch.set_num_threads(1)
        return self

    def __exit__(self, *exc):
        if self.n > 1:
            torch.set_num_threads(self.n)
        return False


class _AllowSync:
    """The read-back is the shim's one intended device sync: let it through a CUDA sync
    debug mode (``torch.cuda.set_sync_debug_mode("error")``) that guards every other step."""
    __slots__ = ("prev",)

    def __enter__(self):
        self.prev = None
        try:
            if torch.cuda.is_initialized():
                self.prev = torch.cuda.get_sync_debug_mode()
                if self.prev:
                    torch.cuda.set_sync_debug_mode(0)
        except Exception:
            self.prev = None
        return self

    def __exit__(self, *exc):
        if self.prev:
            try:
                torch.cuda.set_sync_debug_mode(self.prev)
            except Exception:
                pass
        return False


def _one_line(exc: BaseException) -> str:
    s = f"{type(exc).__name__}: {exc}"
    return s.splitlines()[0][:300] if s else type(exc).__name__


def fetch(tensors: list[torch.Tensor]) -> list[list[float]]:
    """Read many small device tensors back with one transfer per device.

    Scalars of one dtype are stacked and vectors concatenated (a handful of ops, not one per
    tensor), converted to float64 on the device, joined, and copied to the host once.
    """
    out: list[list[float] | None] = [None] * len(tensors)
    groups: dict[Any, dict[Any, list[int]]] = {}
    for i, t in enumerate(tensors):
        if t.device.type == "cpu":
            # no transfer to save on the host: read each tensor on its own (no stack / cat
            # copies). A float tensor's values are exact in Python floats, as after the float64
            # conversion below; other dtypes are converted to float64 as there.
            flat = t.reshape(-1) if t.dim() != 1 else t
            out[i] = (flat if flat.is_floating_point() else flat.to(torch.float64)).tolist()
            continue
        key = (t.dtype, t.dim() == 0)
        groups.setdefault(t.device, {}).setdefault(key, []).append(i)
    for dev, by in groups.items():
        dtype = torch.float32 if dev.type == "mps" else torch.float64
        parts = []
        order: list[tuple[int, int]] = []
        for (dt, scalar), idx in by.items():
            if scalar:
                parts.append(torch.stack([tensors[i] for i in idx]).to(dtype))
                order += [(i, 1) for i in idx]
            else:
                ts = [tensors[i].reshape(-1) if tensors[i].dim() != 1 else tensors[i] for i in idx]
                parts.append(torch.cat(ts).to(dtype) if len(ts) > 1 else ts[0].to(dtype))
                order += [(i, t.shape[0]) for i, t in zip(idx, ts)]
        flat = torch.cat(parts) if len(parts) > 1 else parts[0]
        vals = flat.tolist() if dev.type == "cpu" else flat.cpu().tolist()
        pos = 0
        for i, n in order:
            out[i] = vals[pos:pos + n]
            pos += n
    return out  # type: ignore[return-value]


def _group_lrs(optimizer) -> list:
    """The LR of each param group (a CPU tensor LR as a float; a device tensor: None, no sync)."""
    out = []
    for g in optimizer.param_groups:
        lr = g.get("lr")
        if isinstance(lr, torch.Tensor):
            lr = float(lr) if lr.device.type == "cpu" else None
        out.append(lr)
    return out


def _num(v: float) -> float | int:
    if isinstance(v, float) and math.isfinite(v) and v == int(v) and abs(v) < 2 ** 53:
        return int(v)
    return v


class _Loader:
    __slots__ = ("num", "length", "index", "passes", "had_backward", "nobackward", "ref", "__weakref__")

    def __init__(self, num: int, loader: Any) -> None:
        self.num = num
        self.length = None
        self.index = 0
        self.passes = 0
        self.had_backward = False
        self.nobackward = 0
        self.ref = weakref.ref(loader)


class _Batch:
    """One fetched batch. Its tensors are classified lazily (only when a probe needs them)."""
    __slots__ = ("loader", "phase", "index", "raw", "_cls", "device_label", "backward_seen",
                 "preds_done", "consumed", "step")

    def __init__(self, loader, phase, index, raw, step) -> None:
        self.loader = loader
        self.phase = phase
        self.index = index
        self.raw = raw
        self._cls = None
        self.device_label = None
        self.backward_seen = False
        self.preds_done = False
        self.consumed = False
        self.step = step

    def _classify(self):
        if self._cls is None:
            self._cls = S.classify_batch(self.raw)
            self.raw = None
        return self._cls

    @property
    def images(self):
        return self._classify()[0]

    @property
    def label(self):
        return self._classify()[1]


class _Rec:
    """A pending event whose device tensors wait for the next read-back."""
    __slots__ = ("type", "step", "fields", "dev", "post")

    def __init__(self, type_: str, step: int, fields: dict, dev: dict, post: Callable | None = None):
        self.type = type_
        self.step = step
        self.fields = fields
        self.dev = dev
        self.post = post


class _EvalPass:
    def __init__(self, index: int, loader: _Loader | None, step: int, explicit: bool = False) -> None:
        self.index = index
        self.loader = loader
        self.step = step
        self.explicit = explicit
        self.batches = 0
        self.paired = 0
        self.cm = None
        self.records: list[_Rec] = []
        self.size_mismatch_extra = 0
        self.sanity = False   # set by an adapter: a framework's pre-training sanity check
