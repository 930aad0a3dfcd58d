"""RGB-X / DFormer-style trainings (the guide's codebase: ``utils/train.py``, ``utils/val_mm.py``,
``utils/metrics_new.py``).

What the shim already sees in such a loop without help: dict batches ``data`` / ``modal_x`` /
``label``, ``model(rgb, modal_x, label=gt)`` returning the loss (the decode head is found and
hooked), and whole-image evaluation.  What this adapter adds:

* **The script's own confusion matrix.**  A ``Metrics``-like class (methods ``update(preds,
  labels)`` and ``compute_iou()``, a ``hist`` C x C tensor) is wrapped: ``update`` calls are
  counted, and when ``compute_iou()`` runs the adapter reads ``hist`` and emits
  ``script_metric`` with ``source: "metrics_class"``, the mIoU that ``compute_iou`` returned
  (guide convention) and evidence: ``pixels`` (``hist.sum()``), ``updates`` (calls to
  ``update`` since the last ``compute_iou``), ``num_classes`` and ``matrix`` (C <= 64).
  segwatch's own matrix then says whether the script's disagrees (``metric.script_disagrees``;
  an ``update()`` that is never called leaves ``pixels == 0``).
* **Sliding-window / multi-scale evaluation.**  There the model runs on crops or rescaled
  images, so the shim cannot pair the model's logits with the full-size labels.  When the
  shim's own pass has no paired batch, the predictions that reach ``Metrics.update`` (already
  full size) are fed to ``segwatch.log_eval``.  When the shim pairs by itself, its matrix stays
  independent of the script's.

Use without ``segwatch run``'s auto-detection::

    from segwatch.adapters import dformer
    dformer.patch_metrics_class(Metrics)      # or: dformer.install() before the class is defined

Everything is a no-op outside segwatch.
"""
from __future__ import annotations

import sys

import functools
import weakref

from . import _base as B

__all__ = ["is_metrics_class", "patch_metrics_class", "install", "metric_from_hist"]

_PATCHED = "__segwatch_metrics_patched__"
_state: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def is_metrics_class(cls) -> bool:
    """A class with ``update`` and ``compute_iou`` methods (``hist`` is checked on instances)."""
    try:
        return (isinstance(cls, type) and callable(getattr(cls, "update", None))
                and callable(getattr(cls, "compute_iou", None)))
    except Exception:
        return False


class _St:
    __slots__ = ("updates", "eval_updates", "total", "fed", "last_sig", "__weakref__")

    def __init__(self) -> None:
        self.updates = 0        # update() calls since the last emitted metric
        self.eval_updates = 0   # ... of which during an evaluation (pass open or autograd off)
        self.total = 0          # update() calls ever
        self.fed = 0
        self.last_sig = None


def _st(obj) -> _St | None:
    try:
        st = _state.get(obj)
        if st is None:
            st = _St()
            _state[obj] = st
        return st
    except TypeError:  # not weak-referenceable
        return None


def metric_from_hist(hist) -> tuple[float, int, list | None, int]:
    """(mIoU in percent with the guide's convention, pixels, matrix or None, C) of a C x C hist."""
    import numpy as np

    if hasattr(hist, "detach"):
        m = hist.detach().double().cpu().numpy()
    else:
        m = np.asarray(hist, dtype=np.float64)
    C = int(m.shape[0])
    tp = np.diag(m)
    denom = m.sum(0) + m.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = tp / denom
    iou[~np.isfinite(iou)] = 0.0
    matrix = [[int(round(x)) for x in row] for row in m.tolist()] if C <= 64 else None
    return float(iou.mean() * 100.0), int(round(m.sum())), matrix, C


def _returned_miou(result) -> float | None:
    """The mIoU that ``compute_iou`` returned: ``(ious, miou)`` (DFormer) or a number."""
    try:
        cand = result[1] if isinstance(result, (tuple, list)) and len(result) >= 2 else result
        if hasattr(cand, "item") and getattr(cand, "numel", lambda: 1)() == 1:
            cand = cand.item()
        if isinstance(cand, (int, float)) and not isinstance(cand, bool):
            return float(cand)
    except Exception:
        pass
    return None


def _on_update(obj, args, kwargs) -> None:
    st = _st(obj)
    if st is None:
        return
    st.updates += 1
    st.total += 1
    if not B.active():
        return
    import torch

    if not B.eval_open() and torch.is_grad_enabled():
        return      # a training-time metric (train mIoU): not an evaluation batch
    st.eval_updates += 1
    preds = args[0] if args else kwargs.get("pred", kwargs.get("preds"))
    labels = args[1] if len(args) > 1 else kwargs.get("target", kwargs.get("labels", kwargs.get("label")))
    if preds is None or labels is None:
        return
    # The shim pairs the model's own logits with the labels: keep that matrix independent.
    if B.eval_open() and not B.eval_explicit() and B.auto_pairing_ok():
        return
    B.log_eval(preds, labels)
    st.fed += 1


def _config_class_names(num_classes) -> list | None:
    """A DFormer-style config's ``class_names`` (``C.class_names`` / ``config.class_names``
    in a module of the script), of ``num_classes`` entries, or None."""
    for mod in list(sys.modules.values()):
        try:
            f = mod.__dict__.get("__file__") or ""
            if not f or "site-packages" in f or "dist-packages" in f \
                    or str(mod.__dict__.get("__name__", "")).startswith(("segwatch", "adapters")):
                continue
            for attr in ("C", "config", "cfg"):
                holder = mod.__dict__.get(attr)   # never a module __getattr__ (lazy imports)
                names = getattr(holder, "class_names", None) if holder is not None else None
                if isinstance(names, (list, tuple)) and names and (not num_classes or len(names) == num_classes):
                    return list(names)
        except Exception:
            continue
    return None


def _on_compute(obj, result) -> None:
    st = _st(obj)
    if B.active():
        B.report_class_names(_config_class_names(getattr(obj, "num_classes", None) or getattr(obj, "n_classes", None)),
                             "dformer")
    if not B.active():
        return
    hist = getattr(obj, "hist", None)
    if hist is None or not hasattr(hist, "shape") or len(hist.shape) != 2 or hist.shape[0] != hist.shape[1]:
        return
    miou_h, pixels, matrix, C = metric_from_hist(hist)
    ret = _returned_miou(result)
    value = miou_h
    if ret is not None:
        # the returned value is in percent (DFormer) or a fraction: whichever matches hist
        value = ret
        if 0.0 <= ret <= 1.0 and abs(ret * 100.0 - miou_h) < abs(ret - miou_h):
            value = ret * 100.0
    updates = st.updates if st is not None else None
    if st is not None and st.updates > 0 and st.eval_updates == 0:
        return  # a training-time Metrics instance: its mIoU is not an evaluation's
    sig = (pixels, st.total if st is not None else None, round(value, 6))
    if st is not None and st.last_sig == sig:
        return  # the same matrix computed again (compute_iou, then f1/acc...): one metric
    if st is not None:
        st.last_sig = sig
    # an explicit pass fed from update() ends here (no loader told the shim)
    if st is not None and st.fed and B.eval_explicit():
        B.end_eval()
    B.emit_metric("miou", value, source="metrics_class", cls=type(obj).__name__, pixels=pixels,
                  updates=updates, num_classes=C, matrix=matrix, miou_from_hist=round(miou_h, 4),
                  fed_to_segwatch=(st.fed if st is not None else None))
    if st is not None:
        st.fed = 0
        st.updates = 0
        st.eval_updates = 0


def patch_metrics_class(cls) -> bool:
    """Wrap ``cls.update`` and ``cls.compute_iou`` (once).  Returns True when patched."""
    try:
        if not is_metrics_class(cls) or cls.__dict__.get(_PATCHED):
            return False
        orig_update = cls.update
        orig_compute = cls.compute_iou

        @functools.wraps(orig_update)
        def update(self, *args, **kwargs):
            out = orig_update(self, *args, **kwargs)
            try:
                _on_update(self, args, kwargs)
            except Exception as exc:
                s = B.shim()
                if s is not None:
                    B._fail(s, "adapter:dformer.update", exc)
            return out

        @functools.wraps(orig_compute)
        def compute_iou(self, *args, **kwargs):
            out = orig_compute(self, *args, **kwargs)
            try:
                _on_compute(self, out)
            except Exception as exc:
                s = B.shim()
                if s is not None:
                    B._fail(s, "adapter:dformer.compute_iou", exc)
            return out

        cls.update = update
        cls.compute_iou = compute_iou
        setattr(cls, _PATCHED, True)
        return True
    except Exception:
        return False


def install() -> None:
    """Arm the class-creation hook: every Metrics-like class defined from now on is wrapped."""
    from . import _autodetect
    _autodetect.install_class_hook()
    _autodetect.enable("dformer")
