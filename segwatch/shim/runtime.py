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
import os
import sys
import time
import weakref
from typing import Any

import torch

from segwatch.protocol import make_event

from .common import (LOSS_BUF, _AllowSync, _Batch, _EvalPass, _group_lrs, _Loader, _norm_types, _num,  # noqa: F401
                     _one_line, _OneThread, _Rec, fetch)
from .discovery import Discovery
from .emitter import BaseEmitter, MemoryEmitter
from .evaltrace import EvalTracer
from .evaluation import Evaluation
from .lossfn import LossWatch
from .pause import CoopPause
from .probes.batch import BatchProbe
from .probes.grads import GradsProbe
from .probes.optim import OptimizerHooks
from .probes.preds import PredsProbe
from .probes.readback import Readback
from .probes.update import UpdateProbe
from .sampler import Sampler
from .statedict import StateDictProbe

SHIM_VERSION = "1"


class Shim(Discovery, Evaluation, BatchProbe, PredsProbe, GradsProbe, UpdateProbe, OptimizerHooks, Readback,
           CoopPause, StateDictProbe, LossWatch):
    """The orchestrator: installs the hooks, routes batches, backward passes and optimizer
    steps to the probes (one module each under ``probes/``), the model discovery
    (``discovery``) and the evaluation passes (``evaluation``)."""

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
        # cooperative pause of a distributed run (segwatch run --nproc): segwatch/shim/pause.py
        self._pause_init()
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
        # every step's loss: on a device, copied into a preallocated device buffer (no reference
        # to the loss tensor is kept: keeping them measurably slowed the backward passes on
        # CPU); on CPU, its value (no sync to avoid there)
        self._losses: list[int] = []            # steps whose loss sits in _loss_buf[i] / _loss_host[i]
        self._loss_buf: torch.Tensor | None = None
        self._loss_host: list[float] = []
        self._loss_dev: torch.device | None = None
        self._oor_refs = 0                      # device label maps kept for read-back
        self._pending: list[_Rec] = []
        self._step_rec: _Rec | None = None
        self._light_done = 0
        self._last_overhead_t = 0.0
        self._overhead_events = 0
        # eval
        self._eval: _EvalPass | None = None
        self._eval_index = 0
        # issue 19: time inside the training loader's __next__ (cumulative), and per backward
        # (step, cumulative wait, perf_counter) marks turned into step.data_wait / step.wall at
        # read-back; the mark of the last step event sent is the start of the next span
        self._data_wait_total = 0.0
        self._span_marks: list[tuple[int, float, float]] = []
        self._span_prev: tuple[float, float] | None = None
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

        perf_counter = time.perf_counter

        def __next__(it):
            if shim._pause_file is not None:
                shim._coop_pause("batch")
            t_fetch = perf_counter()
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
                    shim._on_batch(it, batch, perf_counter() - t_fetch)
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
        if self._pause_path is not None:      # distributed run: pause.py's own step count
            self._handles.append(optmod.register_optimizer_step_post_hook(self._pause_hook))
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
        try:
            self._install_lossfn()
        except Exception as exc:  # pragma: no cover - unusual torch
            self.note(f"loss functions not watched: {_one_line(exc)}", "lossfn")

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
        if ls.index > 0 and ls.had_backward:
            # a training pass that was never exhausted ended: a new iterator per epoch driven by a
            # fixed number of next() calls (DFormer style). (A batch peeked before training, with
            # no backward after it, is no pass.)
            ls.passes += 1
            if ls is self._train_loader:
                self.epoch = ls.passes
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
        ls.index = 0          # this pass is counted: a new iterator does not count it again
        if ls is self._train_loader:
            self.epoch = ls.passes
        if self._eval is not None and self._eval.loader is ls:
            self._end_eval(aborted=False)
        self.sampler.spend("oneoff", self._clock() - t0)

    @staticmethod
    def _loader_facts(ls: _Loader, fields: dict) -> None:
        """``batch.num_workers`` / ``batch.pin_memory`` of a training batch's loader."""
        loader = ls.ref()
        if loader is not None:
            nw, pin = getattr(loader, "num_workers", None), getattr(loader, "pin_memory", None)
            fields["num_workers"] = nw if isinstance(nw, int) else None
            fields["pin_memory"] = pin if isinstance(pin, bool) else None

    def _phase(self, ls: _Loader) -> str:
        if not torch.is_grad_enabled():
            return "val"
        if self._train_loader is None or ls is self._train_loader or ls.had_backward:
            return "train"
        return "val"

    def _on_batch(self, it: Any, batch: Any, wait: float = 0.0) -> None:
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
        if phase == "train":
            if self._span_prev is None:
                self._span_prev = (self._data_wait_total, time.perf_counter() - wait)
            self._data_wait_total += wait
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
                    self._loader_facts(ls, rec.fields)
                    self._pending.append(rec)
                probe = "batch"
        self.sampler.spend(probe, self._clock() - t0)


    # =====================================================================================
    # evaluation passes


    # =====================================================================================
    # model discovery


    # root / head instance hooks ----------------------------------------------------------


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
        marks = self._span_marks
        if len(marks) >= 4096:          # no read-back for a long time: keep memory bounded
            del marks[:2048]
        marks.append((s, self._data_wait_total, time.perf_counter()))
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
            t0 = self._clock()
            try:
                self._grad_before = self._leftover_grad_norm()
            except Exception as exc:
                self._fail("grad_before", exc)
            # part of the grads probe's call of this step, not of the every-step base cost
            self.sampler.spend("grads", self._clock() - t0, call=False)


    # =====================================================================================
    # optimizer


    # =====================================================================================
    # read-back


    # =====================================================================================
    # load_state_dict


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
