"""The shim's runtime: global torch hooks, on-device statistics, batched read-back.

One ``Shim`` instance per process (``install()`` / ``uninstall()``). What it patches:

* ``DataLoader.__iter__`` and ``_BaseDataLoaderIter.__next__`` — every batch, every loader;
* ``torch.Tensor.backward`` and ``torch.autograd.backward`` — the training step counter;
* the global optimizer step pre/post hooks — optimizer steps, LR, update ratio;
* ``GradScaler.scale`` / ``.step`` — the AMP scaler (its scale; skipped steps);
* ``nn.Module.load_state_dict`` — missing / unexpected keys;
* during *discovery only*, the global module forward (pre-)hooks, removed as soon as the root
  model (and the module whose output is the logits) is found; then instance hooks on those two.

Phase of a batch (``train`` / ``val``): ``val`` when autograd is disabled at fetch time
(``torch.no_grad()`` / ``inference_mode``), or when the batch comes from a loader other than
the training loader (the loader whose batches backward passes follow) while a training
loader is known and this loader's batches were never followed by a backward. Otherwise
``train``.

Every hook body runs inside ``try/except``: an error disables that probe, is reported once
as a ``probe`` event, and never reaches training. Statistics are device tensors queued in
``self._pending`` and read back in one transfer per device every few steps (the sampler
decides), so a CUDA device is not synchronised on other steps.
"""
from __future__ import annotations

import atexit
import math
import os
import sys
import time
import weakref
from typing import Any, Callable

import torch

from segwatch.protocol import make_event

from . import stats as S
from .emitter import BaseEmitter, MemoryEmitter
from .evaltrace import EvalTracer
from .sampler import Sampler

SHIM_VERSION = "1"
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


class Shim:
    def __init__(self, emitter: BaseEmitter | None = None, config: dict | None = None,
                 debug: bool = False, script: str | None = None, fault: str | None = None,
                 argv: list[str] | None = None) -> None:
        self.emitter = emitter if emitter is not None else MemoryEmitter()
        self.config = config or {}
        ds = self.config.get("dataset") or {}
        nc = ds.get("num_classes")
        self.cfg_num_classes = int(nc) if isinstance(nc, int) and not isinstance(nc, bool) and nc > 0 else None
        self.num_classes = self.cfg_num_classes
        ii = ds.get("ignore_index")
        self.ignore_cfg = ii
        self.ignore = ii if isinstance(ii, int) and not isinstance(ii, bool) else None
        samp = self.config.get("sampling") or {}
        budget = samp.get("overhead_budget", 0.01)
        try:
            budget = float(budget)
        except (TypeError, ValueError):
            budget = 0.01
        max_interval = samp.get("max_interval", 32)
        if not isinstance(max_interval, int) or isinstance(max_interval, bool) or max_interval < 1:
            max_interval = 32
        self.debug = bool(debug)
        self.sampler = Sampler(budget=budget, debug=self.debug, max_interval=max_interval)
        self.script = script
        self.argv = argv
        self.fault = {f.strip() for f in (fault or "").split(",") if f.strip()}
        self.pid = os.getpid()
        self.rank = int(os.environ.get("RANK", "0") or 0)
        self.world_size = int(os.environ.get("WORLD_SIZE", "1") or 1)
        # cooperative pause of a distributed run (segwatch run --nproc): wait while this file exists
        self._pause_file = os.environ.get("SEGWATCH_PAUSE_FILE") or None
        self.disabled: dict[str, str] = {}
        self.installed = False
        self.finished = False
        self._patches: list[tuple[Any, str, Any]] = []
        self._handles: list[Any] = []
        # counters
        self.step = 0
        self.epoch = 0
        self.optimizer_steps = 0
        self.loss_nonfinite_total = 0
        # data
        self._loaders: "weakref.WeakKeyDictionary[Any, _Loader]" = weakref.WeakKeyDictionary()
        self._n_loaders = 0
        self._train_loader: _Loader | None = None
        self._cur: _Batch | None = None
        self._any_batch = False
        # model
        self._root_ref = None
        self._head_ref = None
        self._head_hooked = False
        self._disc_eval = False                 # discovery of a separate evaluation model
        self._eval_root_ref = None
        self._eval_root_handle = None
        self._root_handles: list[Any] = []
        self._site_out = None
        self._site_name = None
        self._head_name = None
        self._root_params: list[tuple[str, torch.nn.Parameter]] = []
        self._norm_mods: list[torch.nn.Module] = []
        self._forced_root = None
        self._disc_handles: list[Any] = []
        self._disc_depth = 0
        self._disc_outs: list[tuple[Any, tuple]] = []
        self._disc_steps = 0
        self._batches_without_root = 0
        self._root_calls = 0
        self._device_type = None
        self._watch_num_classes = None
        # optimizer / scaler
        self._optims: "weakref.WeakSet[Any]" = weakref.WeakSet()
        self._opt_sig = None
        self._opt_ids: set[int] = set()
        self._scaler_ref = None
        self._snap = None
        self._wn_prev = None
        self._changed = None
        self._gnz = None
        self._had_grad: set[int] = set()
        self._norm_snapshots = 0
        # issue-15 signals: gradients left over from before a backward, backward passes per
        # optimizer step, the LR the update used, the scheduler whose step() is called
        self._backwards_since_step = 0
        self._grad_before: torch.Tensor | None = None   # device scalar of this step, or None
        self._lr_applied: list | None = None            # LRs read in this step's pre-hooks
        self._sched_ref = None
        self._sched_cls: str | None = None
        self._sched_steps = 0
        self._sched_depth = 0
        # step / read-back
        self._in_backward = False
        self._grads_due = False
        # every step's loss is copied into a preallocated device buffer (no reference to the
        # loss tensor is kept: keeping them measurably slowed the backward passes on CPU)
        self._losses: list[int] = []            # steps whose loss sits in _loss_buf[i]
        self._loss_buf: torch.Tensor | None = None
        self._oor_refs = 0                      # device label maps kept for read-back
        self._pending: list[_Rec] = []
        self._step_rec: _Rec | None = None
        self._light_done = 0
        self._last_overhead_t = 0.0
        self._overhead_events = 0
        # eval
        self._eval: _EvalPass | None = None
        self._eval_index = 0
        script_dir = os.path.dirname(os.path.abspath(script)) if script else None
        self._tracer = EvalTracer(script_dir)
        self._ld_depth = 0

    # =====================================================================================
    # emitting
    def _emit(self, type_: str, **fields: Any) -> None:
        try:
            fields.setdefault("rank", self.rank)
            fields.setdefault("world_size", self.world_size)
            self.emitter.emit(make_event(type_, **fields))
        except Exception:
            pass

    def _fail(self, name: str, exc: BaseException) -> None:
        if name in self.disabled:
            return
        self.disabled[name] = _one_line(exc)
        self._emit("probe", name=name, status="disabled", error=_one_line(exc),
                   message=f"segwatch disabled its '{name}' probe after an error; training continues",
                   step=self.step)

    def _on(self, name: str) -> bool:
        return name not in self.disabled

    def _inject(self, name: str) -> None:
        if name in self.fault:
            raise RuntimeError(f"fault injected into probe '{name}' (SEGWATCH_FAULT_INJECT)")

    def _clock(self) -> float:
        """Time minus the shim time already accounted inside it: a hook that calls another
        timed piece (a read-back, the end of an evaluation) does not count it twice."""
        return time.perf_counter() - self.sampler.inner

    def note(self, message: str, name: str = "shim") -> None:
        self._emit("probe", name=name, status="note", message=message, step=self.step)

    # =====================================================================================
    # install / uninstall
    def _patch(self, obj: Any, attr: str, new: Any) -> None:
        old = obj.__dict__[attr] if attr in getattr(obj, "__dict__", {}) else getattr(obj, attr)
        self._patches.append((obj, attr, old))
        setattr(obj, attr, new)

    def install(self) -> "Shim":
        if self.installed:
            return self
        self.installed = True
        shim = self
        from torch.utils.data import dataloader as dl

        orig_iter = dl.DataLoader.__iter__

        def __iter__(loader):
            it = orig_iter(loader)
            if shim.installed and shim._on("dataloader"):
                try:
                    shim._on_iter(loader, it)
                except Exception as exc:
                    shim._fail("dataloader", exc)
            return it

        orig_next = dl._BaseDataLoaderIter.__next__

        def __next__(it):
            if shim._pause_file is not None:
                shim._coop_pause("batch")
            try:
                batch = orig_next(it)
            except StopIteration:
                if shim.installed and shim._on("dataloader"):
                    try:
                        shim._on_exhausted(it)
                    except Exception as exc:
                        shim._fail("dataloader", exc)
                raise
            if shim.installed and shim._on("dataloader"):
                try:
                    shim._on_batch(it, batch)
                except Exception as exc:
                    shim._fail("dataloader", exc)
            return batch

        self._patch(dl.DataLoader, "__iter__", __iter__)
        self._patch(dl._BaseDataLoaderIter, "__next__", __next__)

        orig_tb = torch.Tensor.backward

        def backward(self_t, *args, **kwargs):
            return shim._backward(orig_tb, self_t, args, kwargs)

        orig_ab = torch.autograd.backward

        def autograd_backward(tensors, *args, **kwargs):
            return shim._backward(orig_ab, tensors, args, kwargs)

        self._patch(torch.Tensor, "backward", backward)
        self._patch(torch.autograd, "backward", autograd_backward)

        from torch.optim import optimizer as optmod
        self._handles.append(optmod.register_optimizer_step_pre_hook(self._opt_pre))
        self._handles.append(optmod.register_optimizer_step_post_hook(self._opt_post))
        try:
            self._patch_schedulers()
        except Exception as exc:  # pragma: no cover - unusual torch
            self.note(f"LR schedulers not patched: {_one_line(exc)}", "scheduler")

        try:
            from torch.amp import grad_scaler as gs
            orig_scale = gs.GradScaler.scale
            orig_step = gs.GradScaler.step

            def scale(scaler, outputs):
                if shim.installed and shim._on("scaler"):
                    try:
                        shim._scaler_ref = weakref.ref(scaler)
                    except Exception as exc:
                        shim._fail("scaler", exc)
                return orig_scale(scaler, outputs)

            def step(scaler, optimizer, *args, **kwargs):
                if shim.installed and shim._on("scaler"):
                    try:
                        shim._scaler_ref = weakref.ref(scaler)
                        shim._optims.add(optimizer)
                    except Exception as exc:
                        shim._fail("scaler", exc)
                return orig_step(scaler, optimizer, *args, **kwargs)

            self._patch(gs.GradScaler, "scale", scale)
            self._patch(gs.GradScaler, "step", step)
        except Exception as exc:  # pragma: no cover - old torch
            self.note(f"GradScaler not patched: {_one_line(exc)}", "scaler")

        orig_lsd = torch.nn.Module.load_state_dict

        def load_state_dict(module, state_dict, *args, **kwargs):
            return shim._load_state_dict(orig_lsd, module, state_dict, args, kwargs)

        self._patch(torch.nn.Module, "load_state_dict", load_state_dict)

        root = self._root()
        if root is not None:
            # re-installed (benchmark blocks): hook the known root again, no new discovery
            self._hook_root(root, self._head_ref() if self._head_ref is not None else None)
        else:
            self._start_discovery()
        self.sampler.skip_wall()
        return self

    def uninstall(self, finish: bool = True, reason: str = "uninstall") -> None:
        if finish:
            self.finish(reason)
        self.installed = False
        self._stop_discovery()
        for h in self._root_handles + self._handles:
            try:
                h.remove()
            except Exception:
                pass
        self._root_handles = []
        self._handles = []
        if self._eval_root_handle is not None:
            try:
                self._eval_root_handle.remove()
            except Exception:
                pass
            self._eval_root_handle = None
            self._eval_root_ref = None
        for obj, attr, old in reversed(self._patches):
            try:
                setattr(obj, attr, old)
            except Exception:
                pass
        self._patches = []
        if self._tracer.active:
            self._tracer.stop()

    def hello(self) -> None:
        cuda = False
        try:
            cuda = bool(torch.cuda.is_available())
        except Exception:
            pass
        self._emit("hello", pid=os.getpid(), script=self.script, argv=list(self.argv or sys.argv),
                   cwd=os.getcwd(), python=sys.version.split()[0], torch=torch.__version__,
                   device="cuda:0" if cuda else "cpu", cuda=cuda, debug=self.debug,
                   config=self.config or None, shim_version=SHIM_VERSION,
                   num_classes=self.cfg_num_classes, ignore_index=self.ignore_cfg,
                   budget=self.sampler.budget, fault_inject=sorted(self.fault) or None,
                   **self._dist_hello())

    def _dist_hello(self) -> dict:
        """torchrun's LOCAL_RANK / LOCAL_WORLD_SIZE: which ranks this node's supervisor sees."""
        if self.world_size <= 1:
            return {}
        try:
            return {"local_rank": int(os.environ.get("LOCAL_RANK", self.rank)),
                    "local_world_size": int(os.environ.get("LOCAL_WORLD_SIZE", self.world_size))}
        except ValueError:
            return {}

    def finish(self, reason: str = "exit") -> None:
        if self.finished:
            return
        self.finished = True
        try:
            if self._eval is not None:
                self._end_eval(aborted=not self._eval.explicit)
        except Exception as exc:
            self._fail("eval", exc)
        try:
            self._readback(final=True)
        except Exception as exc:
            self._fail("readback", exc)
        try:
            self._emit_overhead(final=True)
        except Exception:
            pass
        share = self.sampler.share_total()
        self._emit("bye", step=self.step, dropped=self.emitter.dropped, events=self.emitter.events + 1,
                   share=share, disabled=sorted(self.disabled), reason=reason,
                   backward_total=self.step, optimizer_steps_total=self.optimizer_steps,
                   loss_nonfinite_total=self.loss_nonfinite_total, epoch=self.epoch,
                   over_budget=self.sampler.over_budget, gaps=self.sampler.gaps())
        try:
            self.emitter.close(2.0)
        except Exception:
            pass
        if self._tracer.active:
            self._tracer.stop()

    # =====================================================================================
    # data loader
    def _loader_state(self, loader: Any) -> _Loader:
        ls = self._loaders.get(loader)
        if ls is None:
            ls = _Loader(self._n_loaders, loader)
            self._n_loaders += 1
            self._loaders[loader] = ls
        return ls

    def _on_iter(self, loader: Any, it: Any) -> None:
        t0 = self._clock()
        self._inject("dataloader")
        ls = self._loader_state(loader)
        try:
            ls.length = len(loader)
        except Exception:
            ls.length = None
        ls.index = 0
        try:
            it._segwatch_loader = ls
        except Exception:
            pass
        if self._eval is not None and self._eval.loader is ls:
            # the same loader restarts before the previous pass was exhausted
            self._end_eval(aborted=True)
        self.sampler.spend("oneoff", self._clock() - t0)

    def _on_exhausted(self, it: Any) -> None:
        ls = getattr(it, "_segwatch_loader", None)
        if ls is None:
            return
        t0 = self._clock()
        ls.passes += 1
        if ls is self._train_loader:
            self.epoch = ls.passes
        if self._eval is not None and self._eval.loader is ls:
            self._end_eval(aborted=False)
        self.sampler.spend("oneoff", self._clock() - t0)

    def _phase(self, ls: _Loader) -> str:
        if not torch.is_grad_enabled():
            return "val"
        if self._train_loader is None or ls is self._train_loader or ls.had_backward:
            return "train"
        return "val"

    def _on_batch(self, it: Any, batch: Any) -> None:
        # hot path: runs for every batch; keep the unsampled branch to a few attribute reads
        ls = getattr(it, "_segwatch_loader", None)
        if ls is None:
            return
        t0 = self._clock()
        if self.fault:
            self._inject("dataloader")
        index = ls.index
        ls.index = index + 1
        prev = self._cur
        if prev is not None and not prev.backward_seen:
            prev.loader.nobackward += 1
        tl = self._train_loader
        phase = "train" if torch.is_grad_enabled() and (tl is None or ls is tl or ls.had_backward) else "val"
        b = _Batch(ls, phase, index, batch, self.step)
        self._cur = b
        self._any_batch = True
        probe = None
        if phase == "val":
            if self._eval is None or (self._eval.loader is not ls and not self._eval.explicit):
                if self._eval is not None:
                    self._end_eval(aborted=True)
                self._start_eval(ls)
            self._eval.batches += 1
            if self._on("batch") and len(self._eval.records) < 4000:
                rec = self._batch_record(b)
                if rec is not None:
                    self._eval.records.append(rec)
            probe = "eval"
        else:
            if self._eval is not None and not self._eval.explicit:
                self._end_eval(aborted=True)
            if self._root_ref is not None:
                self._batches_without_root += 1
                if self._batches_without_root >= 3 and not self._disc_handles:
                    # batches keep coming but the hooked root is not called: a new model?
                    self._start_discovery()
            k = self.step + 1
            if self._on("batch") and self.sampler.due("batch", k):
                self.sampler.mark("batch", k)
                rec = self._batch_record(b)
                if rec is not None:
                    self._pending.append(rec)
                probe = "batch"
        self.sampler.spend(probe, self._clock() - t0)

    def _batch_record(self, b: _Batch) -> _Rec | None:
        try:
            self._inject("batch")
            fields: dict[str, Any] = {"phase": b.phase, "loader": b.loader.num, "index": b.index,
                                      "length": b.loader.length, "epoch": self.epoch, "labels": None,
                                      "inputs": [], "image_shape": None, "align": None, "align_flipped": None}
            dev: dict[str, torch.Tensor] = {}
            with torch.no_grad(), _OneThread():
                for i, (key, x) in enumerate(b.images[:8]):
                    fields["inputs"].append({"key": key, "shape": list(x.shape), "dtype": str(x.dtype).replace("torch.", "")})
                    dev[f"in{i}"] = S.input_stats(x)
                if b.images:
                    fields["image_shape"] = list(b.images[0][1].shape[-2:])
                deferred = None
                if b.label is not None:
                    key, lab = b.label
                    lab2 = S.squeeze_label(lab)
                    fields["labels"] = {"key": key, "shape": list(lab.shape), "dtype": str(lab.dtype).replace("torch.", ""),
                                        "total": lab2.numel(), "ignore_value": self.ignore}
                    if self.num_classes is not None:
                        self._label_dev(lab, dev, fields)
                    else:
                        deferred = lab  # statistics once the class count is known (read-back)
                    if b.images and b.images[0][1].shape[0] == lab.shape[0] and lab2.numel():
                        dev["align"] = S.align_sums(b.images[0][1], lab)
            post = self._batch_post
            rec = _Rec("batch", self.step, fields, dev, post)
            if deferred is not None:
                rec.fields["_deferred"] = deferred
            return rec
        except Exception as exc:
            self._fail("batch", exc)
            return None

    def _label_dev(self, lab: torch.Tensor, dev: dict, fields: dict) -> None:
        st = S.label_stats(lab, self.num_classes, self.ignore)
        for k, v in st.items():
            dev["lab_" + k] = v
        fields["labels"]["num_classes"] = self.num_classes
        if lab.device.type == "cpu":
            fields["labels"]["oor"] = S.host_oor_values(lab, self.num_classes, self.ignore)
        elif self._oor_refs < 16:
            # unique() at read-back (a sync is allowed there); a few references at most
            self._oor_refs += 1
            fields["labels"]["_oor_src"] = lab

    def _batch_post(self, rec: _Rec, vals: dict[str, list[float]]) -> dict:
        f = rec.fields
        for i, inp in enumerate(f["inputs"]):
            v = vals.get(f"in{i}")
            if v:
                inp.update(mean=v[0], std=v[1], min=v[2], max=v[3], nonfinite=int(v[4]))
                if not math.isfinite(v[2]):
                    inp["min"] = None
                if not math.isfinite(v[3]):
                    inp["max"] = None
        lab = f.get("labels")
        if lab is not None and "lab_hist" in vals:
            src = lab.pop("_oor_src", None)
            if src is not None:
                self._oor_refs = max(0, self._oor_refs - 1)
            lab.update(min=_num(vals["lab_min"][0]), max=_num(vals["lab_max"][0]),
                       ignore=int(vals["lab_ignore"][0]), hist=[int(x) for x in vals["lab_hist"]],
                       fractional=int(vals["lab_fractional"][0]), boundary=round(vals["lab_boundary"][0], 6),
                       oor_total=int(vals["lab_oor_total"][0]))
            if "oor" not in lab:
                lab["oor"] = (S.host_oor_values(src, lab["num_classes"], self.ignore)
                              if src is not None and lab["oor_total"] > 0 else {})
        elif lab is not None:
            lab.update(min=None, max=None, ignore=None, hist=None, oor={}, fractional=0, boundary=None, oor_total=None)
        if "align" in vals:
            f["align"], f["align_flipped"] = S.align_from_sums(vals["align"])
        return f

    # =====================================================================================
    # evaluation passes
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
                pred = logits.max(1).indices if logits.dim() == 4 else logits
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

    # =====================================================================================
    # model discovery
    def _start_discovery(self) -> None:
        if self._disc_handles or not self._on("discovery"):
            return
        m = torch.nn.modules.module
        self._disc_depth = 0
        self._disc_outs = []
        self._disc_steps = 0
        self._disc_handles = [
            m.register_module_forward_pre_hook(self._g_pre),
            m.register_module_forward_hook(self._g_post, with_kwargs=True, always_call=True),
        ]

    def _stop_discovery(self) -> None:
        for h in self._disc_handles:
            try:
                h.remove()
            except Exception:
                pass
        self._disc_handles = []
        self._disc_outs = []
        self._disc_depth = 0

    def _g_pre(self, module, args):
        self._disc_depth += 1
        if self._disc_depth == 1:
            self._disc_outs = []

    def _g_post(self, module, args, kwargs, output):
        d = self._disc_depth
        self._disc_depth = max(0, d - 1)
        if not self._on("discovery") or not self.installed:
            return
        t0 = self._clock()
        try:
            self._inject("discovery")
            if d > 1:
                if len(self._disc_outs) < 8192:
                    t = output
                    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
                        t = output[0]
                    elif isinstance(output, dict):
                        t = S.find_logits(output, None, None)
                    if isinstance(t, torch.Tensor) and t.dim() == 4 and t.is_floating_point() and t.shape[1] >= 2:
                        self._disc_outs.append((module, tuple(t.shape), weakref.ref(t)))
            elif d == 1:
                self._consider_root(module, args, kwargs or {}, output)
        except Exception as exc:
            self._fail("discovery", exc)
            self._stop_discovery()
        self.sampler.spend("oneoff", self._clock() - t0)

    def _consider_root(self, module, args, kwargs, output) -> None:
        if self._disc_eval:
            self._consider_eval_root(module, args, kwargs, output)
            return
        if self._forced_root is not None and module is not self._forced_root():
            return
        if module is self._root():
            return
        if self._forced_root is None and not any(True for _ in module.parameters()):
            return
        b = self._cur
        inputs = list(S.iter_tensors(list(args))) + list(S.iter_tensors(dict(kwargs)))
        B = None
        if b is not None and b.images and self._forced_root is None:
            # a tensor of the batch itself, or one made from it: same batch size and spatial
            # size (model(torch.cat([rgb, depth], 1)), imgs.cuda(), imgs.float() ...)
            for _, t in inputs:
                if t.dim() != 4 or not t.is_floating_point():
                    continue
                for _, im in b.images:
                    if t is im or (t.shape[0] == im.shape[0] and t.shape[-2:] == im.shape[-2:]):
                        B = t.shape[0]
                        break
                if B is not None:
                    break
        if B is None and (self._forced_root is not None or not self._any_batch or self._disc_steps >= 2):
            # explicit root, no DataLoader, or nothing matched over two training steps:
            # the outermost module with parameters called on an image-like tensor
            for _, t in inputs:
                if t.dim() == 4 and t.is_floating_point():
                    B = t.shape[0]
                    break
        if B is None:
            return
        nc = self.num_classes
        root_logits = S.find_logits(output, B, None)
        outs = [(m, s, r) for m, s, r in self._disc_outs if s[0] == B and m is not module]
        head = None
        if nc:
            for m, s, r in reversed(outs):
                if s[1] == nc:
                    head = (m, s, r)
                    break
        if root_logits is not None and nc and root_logits.shape[1] != nc and head is not None:
            root_logits = None   # the root returns something else with 4 dims; the head matches
        if head is None:
            want = root_logits.shape[1] if root_logits is not None else None
            for m, s, r in reversed(outs):
                if want is None or s[1] == want:
                    head = (m, s, r)
                    break
        if root_logits is None and head is None:
            return
        self._set_root(module, head[0] if head else None,
                       root_logits.shape[1] if root_logits is not None else head[1][1],
                       "root" if root_logits is not None else None)
        # this very forward's logits count too (the instance hooks start with the next call)
        logits = root_logits
        if logits is None and head is not None:
            logits = head[2]()
        self._disc_outs = []
        if logits is not None:
            self._on_logits(logits, self._cur)

    def _consider_eval_root(self, module, args, kwargs, output) -> None:
        if module is self._root():
            # evaluation runs the training model: its hooks see it
            self._disc_eval = False
            self._stop_discovery()
            return
        if not any(True for _ in module.parameters()):
            return
        b = self._cur
        B = b.images[0][1].shape[0] if b is not None and b.images else None
        logits = S.find_logits(output, B, self.num_classes)
        if logits is None:
            return
        self._disc_eval = False
        self._stop_discovery()
        if self._eval_root_handle is not None:
            self._eval_root_handle.remove()
        self._eval_root_ref = weakref.ref(module)
        self._eval_root_handle = module.register_forward_hook(self._eval_root_post, with_kwargs=True)
        self.note(f"evaluation runs on another {type(module).__name__} than the training model "
                  "(an EMA copy?): its outputs are paired with the evaluation labels", "discovery")
        self._on_logits(logits, b, "eval_model")

    def _eval_root_post(self, module, args, kwargs, output):
        if self._eval is None or not self.installed:
            return None          # only evaluation passes are observed on this model
        return self._root_post(module, args, kwargs, output)

    def _root(self):
        return self._root_ref() if self._root_ref is not None else None

    def _set_root(self, root, head, out_channels: int, site: str | None) -> None:
        for h in self._root_handles:
            try:
                h.remove()
            except Exception:
                pass
        self._root_handles = []
        self._root_ref = weakref.ref(root)
        names = {}
        try:
            names = {id(m): n for n, m in root.named_modules()}
        except Exception:
            pass
        head_name = names.get(id(head)) if head is not None else None
        self._head_name = head_name
        self._site_name = site or head_name or "root"
        self._root_params = [(n, p) for n, p in root.named_parameters()]
        self._norm_mods = [m for m in root.modules() if isinstance(m, _norm_types())]
        self._wn_prev = None
        self._changed = None
        self._had_grad = set()
        self._norm_snapshots = 0
        self._head_ref = weakref.ref(head) if head is not None else None
        self._hook_root(root, head)
        self._stop_discovery()
        if self.num_classes is None:
            self.num_classes = int(out_channels)
        dev = None
        for _, p in self._root_params[:1]:
            dev = str(p.device)
            self._device_type = p.device.type
        if self._device_type == "cuda":
            # reading back synchronises the device: not more often than every 5 steps
            self.sampler.set_readback_min(5)
        n_params = sum(p.numel() for _, p in self._root_params)
        trainable = sum(p.numel() for _, p in self._root_params if p.requires_grad)
        self._emit("model", step=self.step, cls=type(root).__name__, params=n_params, trainable=trainable,
                   site=self._site_name, head=head_name, out_channels=int(out_channels),
                   num_classes=self.cfg_num_classes if self.cfg_num_classes is not None else self.num_classes,
                   device=dev, norm_modules=len(self._norm_mods))

    def _hook_root(self, root, head) -> None:
        for h in self._root_handles:
            try:
                h.remove()
            except Exception:
                pass
        self._root_handles = [root.register_forward_hook(self._root_post, with_kwargs=True)]
        # the head (decode head / classifier) is hooked only when the root does not return
        # the logits itself (DFormer style: the loss in training)
        self._head_hooked = False
        if head is not None and self._site_name != "root":
            self._root_handles.append(head.register_forward_hook(self._head_post))
            self._head_hooked = True
        self._batches_without_root = 0

    def watch(self, model: torch.nn.Module, num_classes: int | None = None, ignore_index: int | None = None) -> None:
        if num_classes:
            self.num_classes = int(num_classes)
            if self.cfg_num_classes is None:
                self.cfg_num_classes = int(num_classes)
        if ignore_index is not None:
            self.ignore = int(ignore_index)
            self.ignore_cfg = int(ignore_index)
        if model is self._root():
            return
        self._forced_root = weakref.ref(model)
        self._stop_discovery()
        self._start_discovery()

    # root / head instance hooks ----------------------------------------------------------
    def _head_post(self, module, args, output):
        self._site_out = output

    def _root_post(self, module, args, kwargs, output):
        if not self._on("forward"):
            return None
        t0 = self._clock()
        probe = None
        try:
            if self.fault:
                self._inject("forward")
            self._batches_without_root = 0
            site_out = self._site_out
            self._site_out = None
            b = self._cur
            val = (not torch.is_grad_enabled()) or (b is not None and b.phase == "val")
            if not val and (not self.sampler.due("preds", self.step + 1) or (b is not None and b.preds_done)
                            or not self._on("preds")):
                self.sampler.spend(None, self._clock() - t0)
                return None
            B = None
            if b is not None and b.images:
                B = b.images[0][1].shape[0]
            if b is not None and b.label is not None and b.device_label is None:
                # the labels as the model received them (already on its device), if passed in
                lab = b.label[1]
                for _, t in S.iter_tensors([list(args), dict(kwargs or {})]):
                    if t is not lab and tuple(t.shape) == tuple(lab.shape) and t.dtype == lab.dtype:
                        b.device_label = t
                        break
            logits = S.find_logits(output, B, self.num_classes)
            site = "root"
            if logits is not None and self.cfg_num_classes and logits.shape[1] != self.cfg_num_classes \
                    and site_out is not None:
                logits = None
            if logits is None and site_out is not None:
                logits = S.find_logits(site_out, B, self.num_classes)
                site = self._head_name or "head"
            if logits is None and site_out is None and self._head_ref is not None and not self._head_hooked:
                head = self._head_ref()
                if head is not None:   # the root stopped returning logits (training): watch the head
                    self._root_handles.append(head.register_forward_hook(self._head_post))
                    self._head_hooked = True
            if logits is not None:
                probe = self._on_logits(logits, b, site)
        except Exception as exc:
            self._fail("forward", exc)
        self.sampler.spend(probe, self._clock() - t0)
        return None

    def _on_logits(self, logits: torch.Tensor, b: _Batch | None, site: str | None = None) -> str | None:
        if self.num_classes is None:
            self.num_classes = int(logits.shape[1])
        val = (not torch.is_grad_enabled()) or (b is not None and b.phase == "val")
        if val:
            if not self._on("eval"):
                return "eval"
            try:
                self._inject("eval")
                ev = self._eval
                if b is None or b.label is None or b.consumed:
                    return "eval"
                if ev is None:
                    return "eval"
                b.consumed = True
                lab = b.device_label if b.device_label is not None else b.label[1]
                with torch.no_grad(), _OneThread():
                    pred = logits.detach().max(1).indices
                    if not ev.explicit:
                        self._eval_update(ev, pred, lab)
                    if self._on("preds") and len(ev.records) < 8000:
                        rec = self._preds_record(logits, lab, "val", pred=pred, full=True, site=site)
                        if rec is not None:
                            ev.records.append(rec)
            except Exception as exc:
                self._fail("eval", exc)
            return "eval"
        # training
        if not self._on("preds"):
            return None
        k = self.step + 1
        if b is not None and b.preds_done:
            return None
        if not self.sampler.due("preds", k):
            return None
        self.sampler.mark("preds", k)
        if b is not None:
            b.preds_done = True
        lab = None
        if b is not None and b.label is not None:
            lab = b.device_label if b.device_label is not None else b.label[1]
        rec = self._preds_record(logits, lab, "train", site=site)
        if rec is not None:
            self._pending.append(rec)
        return "preds"

    def _preds_record(self, logits, lab, phase, pred=None, full=False, site=None) -> _Rec | None:
        try:
            self._inject("preds")
            fields_stride = 1
            shape = list(logits.shape)
            with torch.no_grad(), _OneThread():
                n = self.num_classes or logits.shape[1]
                h, w = logits.shape[-2:]
                lab_r = None
                if lab is not None and lab.shape[0] == logits.shape[0]:
                    lab2 = S.squeeze_label(lab)
                    if full and tuple(lab2.shape[-2:]) != (h, w):
                        lab_r = None
                    else:
                        lab_r = S.resize_nearest(lab2, h, w)
                        if lab_r.device != logits.device:
                            lab_r = lab_r.to(logits.device, non_blocking=True)
                if pred is None:
                    # training: the prediction histogram on a strided subsample of the logits
                    st = S.subsample_stride(logits.shape, 1 << 18)
                    if st > 1:
                        logits = logits[..., ::st, ::st]
                        h, w = logits.shape[-2:]
                        if lab_r is not None:
                            lab_r = lab_r[..., ::st, ::st]
                        fields_stride = st
                    pred = logits.detach().max(1).indices
                    prob = S.probability_signature(logits)
                else:
                    prob = None
                dev = self._pred_stats_from(pred, logits.shape[1], n, lab_r)
                if prob is not None:
                    dev["prob"] = prob
            fields = {"phase": phase, "shape": shape, "channels": int(logits.shape[1]),
                      "site": site or self._site_name, "stride": fields_stride}
            return _Rec("preds", self.step, fields, dev, self._preds_post)
        except Exception as exc:
            self._fail("preds", exc)
            return None

    def _pred_stats_from(self, pred, C, n, lab_r):
        out = {"hist": S.hist(pred, torch.ones_like(pred, dtype=torch.bool), max(C, n))[:n]}
        if lab_r is not None:
            lab = lab_r
            if lab.is_floating_point():
                lab = torch.nan_to_num(lab, nan=-1.0).round()
            lab = lab.long()
            valid = (lab >= 0) & (lab < n)
            if self.ignore is not None:
                valid &= lab != self.ignore
            out["gt_hist"] = S.hist(lab, valid, n)
            out["correct"] = ((pred == lab) & valid).sum()
            out["valid"] = valid.sum()
        return out

    def _preds_post(self, rec: _Rec, vals: dict) -> dict:
        f = rec.fields
        hist = [int(x) for x in vals["hist"]]
        f["hist"] = hist
        f["unique"] = sum(1 for x in hist if x > 0)
        f["value_range"] = None
        f["channel_sum_dev"] = None
        if "prob" in vals:
            mn, mx, dev = vals["prob"]
            if math.isfinite(mn) and math.isfinite(mx):
                f["value_range"] = [mn, mx]
            f["channel_sum_dev"] = dev if math.isfinite(dev) else None
        if "gt_hist" in vals:
            f["gt_hist"] = [int(x) for x in vals["gt_hist"]]
            f["correct"] = int(vals["correct"][0])
            f["valid"] = int(vals["valid"][0])
        else:
            f["gt_hist"] = None
            f["correct"] = None
            f["valid"] = None
        return f

    # =====================================================================================
    # backward
    def _backward(self, orig, tensors, args, kwargs):
        if self._in_backward or not self.installed:
            return orig(tensors, *args, **kwargs)
        self._in_backward = True
        self._grads_due = False
        try:
            if self._on("backward"):
                t0 = self._clock()
                try:
                    self._pre_backward(tensors)
                except Exception as exc:
                    self._fail("backward", exc)
                self.sampler.spend(None, self._clock() - t0)
            result = orig(tensors, *args, **kwargs)
        finally:
            self._in_backward = False
        # unsampled steps do not come back here: after a backward pass the shim's data is
        # out of the CPU caches, and every hook entry costs microseconds
        if self._grads_due and self._on("backward"):
            t0 = self._clock()
            probe = None
            try:
                probe = self._post_backward()
            except Exception as exc:
                self._fail("backward", exc)
            self.sampler.spend(probe, self._clock() - t0)
        return result

    def _pre_backward(self, tensors) -> None:
        if self.fault:
            self._inject("backward")
        loss = tensors
        if isinstance(loss, (list, tuple)):
            loss = loss[0] if loss else None
        # a finished step that did not step the optimizer (AMP skip) is read back here
        if self._pending or self._losses:
            self._maybe_readback()
        s = self.step = self.step + 1
        if isinstance(loss, torch.Tensor):
            self._keep_loss(s, loss)
        b = self._cur
        if b is not None:
            if not b.backward_seen:
                b.backward_seen = True
                b.loader.had_backward = True
                if self._train_loader is None or self._train_loader is not b.loader:
                    self._train_loader = b.loader
                    self.epoch = b.loader.passes
        if self._eval is not None:
            self._end_eval(aborted=not self._eval.explicit)
        if self._disc_handles and self._root_ref is None:
            self._disc_steps += 1
            if self._disc_steps == 50 and self._forced_root is None:
                self._stop_discovery()
                self.note("no root model found after 50 steps (no module called with a batch from a "
                          "DataLoader); call segwatch.watch(model) to name it", "discovery")
        if self.sampler.step_done(s):
            self._emit_overhead()
        self._step_rec = None
        self._grads_due = self.sampler.due("grads", s) and self._on("grads")
        self._backwards_since_step += 1
        self._lr_applied = None
        self._grad_before = None
        if self._grads_due and self._backwards_since_step == 1 and self._on("grad_before"):
            try:
                self._grad_before = self._leftover_grad_norm()
            except Exception as exc:
                self._fail("grad_before", exc)

    def _keep_loss(self, s: int, loss: torch.Tensor) -> None:
        l = loss.detach()
        buf = self._loss_buf
        if buf is None or buf.device != l.device:
            if self._losses:
                self._readback()
            buf = self._loss_buf = torch.empty(LOSS_BUF, dtype=torch.float32, device=l.device)
        if len(self._losses) >= LOSS_BUF:
            self.sampler.request_readback()
            self._maybe_readback()
            if len(self._losses) >= LOSS_BUF:
                return
        if l.numel() != 1:
            l = l.float().mean()
        buf[len(self._losses)] = l              # a device copy, no host sync
        self._losses.append(s)

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
            # parameters before the optimizer step; compared in the optimizer's post hook
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
        return "grads"

    def _grad_stats(self, f: dict, dev: dict) -> None:
        params = self._grad_params()
        with_grad = []
        idx = []
        for i, (n, p) in enumerate(params):
            g = p.grad
            if g is not None and not g.is_sparse:
                with_grad.append((n, g))
                idx.append(i)
        f["with_grad"] = len(with_grad)
        f["no_grad"] = len(params) - len(with_grad)
        if self._root_params:
            self._had_grad.update(idx)
            f["eval_modules"] = sum(1 for m in self._norm_mods if not m.training)
            f["norm_modules"] = len(self._norm_mods)
            ids = self._optimizer_param_ids()
            f["no_optim"] = (sum(1 for i in idx if id(params[i][1]) not in ids) if ids is not None else None)
        else:
            f["eval_modules"] = None
            f["norm_modules"] = None
            f["no_optim"] = None
        if not with_grad:
            return
        grads = [g for _, g in with_grad]
        with torch.no_grad(), _OneThread():
            try:
                norms = torch._foreach_norm(grads)
                vec = torch.stack([x.float() for x in norms]) if len({x.dtype for x in norms}) > 1 else torch.stack(norms).float()
            except Exception:
                vec = torch.stack([g.detach().float().norm().to(grads[0].device) for g in grads])
            scaler = self._scaler_ref() if self._scaler_ref is not None else None
            if scaler is not None and getattr(scaler, "_enabled", False) and getattr(scaler, "_scale", None) is not None:
                sc = scaler._scale.detach().float().reshape(()).clone()
                dev["scale"] = sc
                vec = vec / sc.to(vec.device)
            dev["gnorms"] = vec
        f["_names"] = [n for n, _ in with_grad]

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

    # =====================================================================================
    # optimizer
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
        if self._pause_file is not None:
            self._coop_pause("optimizer step")
        return None

    def _opt_pre(self, optimizer, args, kwargs):
        """The LRs this update uses, read just before it (a script that changes the LR after
        ``step()`` shows it here: ``lr_applied`` differs from what it meant to set)."""
        if not self.installed or not self._on("lr_applied"):
            return None
        t0 = self._clock()
        try:
            if self.fault:
                self._inject("lr_applied")
            lrs = _group_lrs(optimizer)
            if self._lr_applied is None:
                self._lr_applied = lrs
            else:
                self._lr_applied = self._lr_applied + lrs     # several optimizers in one step
            rec = self._step_rec
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

    def _leftover_grad_norm(self) -> torch.Tensor:
        """Total L2 norm of the .grad tensors present before this backward (a device scalar;
        0 when there are none): non-zero on the first backward after a step means the
        gradients were not reset."""
        with torch.no_grad():
            grads = [p.grad for _, p in self._grad_params() if p.grad is not None and not p.grad.is_sparse]
            if not grads:
                return torch.zeros((), dtype=torch.float32)
            dev = grads[0].device
            norms = torch._foreach_norm(grads)
            return torch.stack([x.float().to(dev) for x in norms]).norm()

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

    def _light_fields(self, s: int) -> dict:
        """Fields of a step event that no probe sampled (counters, LRs; the loss is added
        at read-back)."""
        return dict(backward_total=s, grad_norm=None, grad_nonfinite=None, lr=self._lrs(),
                    layer_norms=None, update_ratio=None, no_optim=None, with_grad=None, no_grad=None,
                    eval_modules=None, norm_modules=None, scale=None, sampled=False,
                    grad_before_backward=None, backwards_since_step=None, lr_applied=None,
                    scheduler=self._scheduler_field())

    def _coop_pause(self, where: str) -> None:
        """Cooperative pause (distributed runs): while the supervisor's pause file exists,
        wait here, at a step boundary, outside any collective. One ``os.stat`` when not paused.

        The ranks agree on the step to stop after (``PAUSE_FILE.target``, written once by the
        first rank that sees the pause: its step + 1). Under DDP no rank can be more than one
        backward ahead of another, so every rank reaches that step's boundary and none is left
        waiting inside a collective for a rank that stopped one step earlier."""
        try:
            os.stat(self._pause_file)
        except OSError:
            self._pause_target = None
            return
        except Exception:
            self._pause_file = None
            return
        now = time.monotonic()
        if getattr(self, "_pause_target", None) is None:
            self._pause_target = self._agree_pause_target()
            self._pause_since = (now, self.step)
        since_t, since_step = self._pause_since
        if self.step < self._pause_target and not (self.step == since_step and now - since_t > 30.0):
            return      # go on to the agreed step (unless no backward came for 30 s: stop here)
        t0 = time.perf_counter()
        try:
            if self._pending or self._losses:
                self._readback()            # the steps before the pause reach the viewer
        except Exception as exc:
            self._fail("readback", exc)
        self._emit("probe", name="pause", status="note", step=self.step,
                   message=f"rank {self.rank} paused at the {where} boundary (step {self.step})")
        try:
            while True:
                time.sleep(0.05)
                os.stat(self._pause_file)
        except OSError:
            pass
        self._pause_target = None
        self._emit("probe", name="pause", status="note", step=self.step,
                   message=f"rank {self.rank} resumed after {time.perf_counter() - t0:.1f} s")

    def _agree_pause_target(self) -> int:
        """The step every rank pauses after: read ``PAUSE_FILE.target``, or create it (atomic
        link of a complete file, so a reader never sees it half written) with step + 1."""
        tpath = self._pause_file + ".target"
        try:
            with open(tpath) as fh:
                return int(fh.read().strip())
        except (OSError, ValueError):
            pass
        want = self.step + 1
        tmp = f"{tpath}.{os.getpid()}"
        try:
            with open(tmp, "w") as fh:
                fh.write(str(want))
            try:
                os.link(tmp, tpath)
            except FileExistsError:
                pass
        except OSError:
            return want
        finally:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        try:
            with open(tpath) as fh:
                return int(fh.read().strip())
        except (OSError, ValueError):
            return want

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

    def _lrs(self) -> list:
        out = []
        for o in list(self._optims):
            out += _group_lrs(o)
        return out

    # =====================================================================================
    # read-back
    def _maybe_readback(self) -> None:
        if not (self._pending or self._losses):
            return
        if not self._on("readback"):
            # nothing can be read back any more: keep memory bounded
            self._pending = []
            self._losses = []
            self._step_rec = None
            return
        if self.sampler.readback_due(self.step):
            try:
                self._readback()
            except Exception as exc:
                self._fail("readback", exc)
                self._pending = []
                self._losses = []
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
        self._inject("readback")
        self.sampler.mark("readback", self.step)
        recs = self._pending
        self._pending = []
        losses = self._losses
        self._losses = []
        if self._step_rec is not None and self._step_rec in recs:
            self._step_rec = None
        extra = []
        if losses:
            extra = [self._loss_buf[:len(losses)]]
        changed = self._changed if (self._changed is not None and self._norm_snapshots >= 2) else None
        if changed is not None:
            # parameters that had a non-zero gradient at some compared step and never changed
            extra.append(self._gnz & ~changed)
        # one transfer per device for every pending record, the losses and the change mask
        with _OneThread(), _AllowSync():
            per, out_extra = self._gather(recs, extra)
        step_recs = [r for r in recs if r.type == "step"]
        loss_vals: dict[int, float] = {}
        if losses:
            loss_vals = dict(zip(losses, out_extra[0]))
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
        with _OneThread(), _AllowSync():
            self._emit_recs(recs, per)
        for s in sorted(light):
            f = dict(base)
            f.update(self._light_fields(s))
            f.update(loss=loss_vals.get(s), loss_nonfinite_total=nf_before.get(s, self.loss_nonfinite_total))
            self._emit("step", step=s, **f)
        self.sampler.spend("readback", self._clock() - t0)

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

    # =====================================================================================
    # load_state_dict
    def _load_state_dict(self, orig, module, state_dict, args, kwargs):
        if self._ld_depth or not self.installed or not self._on("state_dict"):
            return orig(module, state_dict, *args, **kwargs)
        strict = kwargs.get("strict", args[0] if args else True)
        self._ld_depth += 1
        try:
            try:
                result = orig(module, state_dict, *args, **kwargs)
            except BaseException as exc:
                self._report_state_dict(module, state_dict, strict, None, exc)
                raise
            self._report_state_dict(module, state_dict, strict, result, None)
            return result
        finally:
            self._ld_depth -= 1

    def _report_state_dict(self, module, state_dict, strict, result, exc) -> None:
        try:
            self._inject("state_dict")
            own = list(module.state_dict().keys())
            given = set(state_dict.keys()) if hasattr(state_dict, "keys") else set()
            if result is not None and hasattr(result, "missing_keys"):
                missing = list(result.missing_keys)
                unexpected = list(result.unexpected_keys)
            else:
                owns = set(own)
                missing = [k for k in own if k not in given]
                unexpected = [k for k in given if k not in owns]
            self._emit("state_dict", step=self.step, module=type(module).__name__, missing=len(missing),
                       unexpected=len(unexpected), total=len(own), loaded=sum(1 for k in own if k in given),
                       strict=bool(strict), examples_missing=missing[:5],
                       examples_unexpected=[str(k) for k in unexpected[:5]],
                       error=_one_line(exc) if exc is not None else None)
        except Exception as e:
            self._fail("state_dict", e)

    def log_metric(self, name: str, value: float, step: int | None = None, line: str | None = None) -> None:
        try:
            self._emit("script_metric", name=str(name), value=float(value),
                       step=self.step if step is None else int(step), line=line, source="adapter")
        except Exception:
            pass


# ---------------------------------------------------------------------------------------
_CURRENT: Shim | None = None


def _after_fork_in_child() -> None:
    """DataLoader workers (and any fork) inherit the patches: make them pass-through there."""
    s = _CURRENT
    if s is not None:
        s.installed = False
        s.finished = True


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def current() -> Shim | None:
    return _CURRENT


def install(config: dict | None = None, emitter: BaseEmitter | None = None, debug: bool | None = None,
            script: str | None = None, fault: str | None = None, hello: bool = True,
            register_atexit: bool = False, argv: list[str] | None = None) -> Shim:
    """Install the hooks in this process (replacing a previous installation)."""
    global _CURRENT
    if _CURRENT is not None:
        uninstall()
    shim = Shim(emitter=emitter, config=config, debug=bool(debug), script=script, fault=fault, argv=argv)
    _CURRENT = shim
    if hello:
        shim.hello()
    shim.install()
    if register_atexit:
        atexit.register(shim.finish, "atexit")
    return shim


def uninstall(finish: bool = True) -> None:
    global _CURRENT
    shim = _CURRENT
    _CURRENT = None
    if shim is not None:
        shim.uninstall(finish=finish)
