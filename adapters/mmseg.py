"""mmengine / mmsegmentation: ``SegwatchHook``.

What the shim already sees in an mmengine run: the DataLoader batches (mmengine batches are
``{"inputs": [...], "data_samples": [...]}``; the shim reads the labels inside the data samples), ``backward`` (``OptimWrapper.update_params``) and the optimizer.  The hook:

* ``before_train``: names the model (``segwatch.watch(runner.model)``, unwrapping DDP), since
  the shim cannot match mmengine's list-of-images batches with the model's stacked input;
  reports the class names of the dataset's ``metainfo``;
* the labels inside the data samples need nothing from the hook: the shim's batch probe reads
  ``data_samples[i].gt_sem_seg.data`` itself (``segwatch.shim.stats.classify_batch``);
* ``before_train`` also tells whether the training dataset reduces zero labels (a
  ``dataset_facts`` note: ``label.last_class_missing``);
* ``after_val_iter``: pairs each output data sample's prediction with its ground truth, the
  mmseg way: ``pred_sem_seg.data`` (or ``seg_logits.data``) with ``gt_sem_seg.data`` (both at
  the original image size), and feeds ``segwatch.log_eval``;
* ``after_val_epoch``: ends the evaluation pass and reports the evaluator's mIoU (``mIoU``,
  percent, mmseg's convention: mean over present classes) as ``script_metric``;
* ``after_train_iter``: notes once when training iterations pass without a ``backward`` the
  shim can see.

By hand (config)::

    custom_hooks = [dict(type="SegwatchHook")]      # after ``import segwatch.adapters.mmseg``

or ``runner.register_hook(SegwatchHook())``.  Under ``segwatch run`` with ``adapter: auto``
every ``Runner`` gets one.  A no-op outside segwatch.  mmsegmentation itself is not needed:
the hook reads mmengine data elements and dicts.
"""
from __future__ import annotations


from . import _base as B

__all__ = ["SegwatchHook", "attach", "pairs_from_outputs", "stacked_labels"]


def _dataset_classes(runner):
    """The class names of mmseg's dataset metainfo (``metainfo['classes']``), or None."""
    try:
        loader = getattr(runner, "train_dataloader", None) or getattr(runner, "val_dataloader", None)
        ds = getattr(loader, "dataset", None)
        meta = getattr(ds, "metainfo", None) or getattr(ds, "METAINFO", None) or {}
        classes = meta.get("classes") if isinstance(meta, dict) else None
        return list(classes) if classes else None
    except Exception:
        return None


def _reduce_zero_label(runner):
    """The training dataset's ``reduce_zero_label`` (attribute or metainfo), or None."""
    try:
        loader = getattr(runner, "train_dataloader", None)
        ds = getattr(loader, "dataset", None)
        v = getattr(ds, "reduce_zero_label", None)
        if not isinstance(v, bool):
            meta = getattr(ds, "metainfo", None) or {}
            v = meta.get("reduce_zero_label") if isinstance(meta, dict) else None
        return v if isinstance(v, bool) else None
    except Exception:
        return None


def _report_reduce_zero_label(runner) -> None:
    """Tell segwatch whether the dataset reduces zero labels (a ``dataset_facts`` note): with
    0-based annotations that shifts every class down once too often (label.last_class_missing)."""
    s = B.shim()
    v = _reduce_zero_label(runner)
    if s is None or v is None:
        return
    s._emit("probe", name="dataset_facts", status="note", source="mmseg", reduce_zero_label=v,
            message=f"mmseg dataset: reduce_zero_label={v}", step=int(getattr(s, "step", 0) or 0))


def _data(x):
    """``PixelData``/``BaseDataElement`` -> its ``data`` tensor; dicts -> ``["data"]``; tensors as is."""
    if x is None:
        return None
    if hasattr(x, "shape") and hasattr(x, "dim"):
        return x
    if isinstance(x, dict):
        return x.get("data")
    return getattr(x, "data", None)


def _field(sample, name):
    if isinstance(sample, dict):
        return sample.get(name)
    try:
        return getattr(sample, name, None)
    except Exception:
        return None


def stacked_labels(data_samples):
    """The ``gt_sem_seg.data`` [1, H, W] of each data sample stacked as [B, H, W], or None
    (no labels, or samples of different sizes: mmseg crops in training, not always in val)."""
    import torch

    if not isinstance(data_samples, (list, tuple)) or not data_samples:
        return None
    labs = []
    for s in data_samples:
        lab = _data(_field(s, "gt_sem_seg"))
        if lab is None or not hasattr(lab, "dim"):
            return None
        labs.append(lab[0] if lab.dim() == 3 and lab.shape[0] == 1 else lab)
    if any(lab.dim() != 2 or lab.shape != labs[0].shape for lab in labs):
        return None
    return torch.stack(labs)


def pairs_from_outputs(outputs, data_batch=None):
    """[(prediction, label)] per sample of a val step: prediction is a class map [1, H, W] (or
    logits [C, H, W]), label [1, H, W]."""
    out = []
    if not isinstance(outputs, (list, tuple)):
        return out
    gts = None
    if isinstance(data_batch, dict) and isinstance(data_batch.get("data_samples"), (list, tuple)):
        gts = data_batch["data_samples"]
    for i, s in enumerate(outputs):
        pred = _data(_field(s, "pred_sem_seg"))
        if pred is None:
            pred = _data(_field(s, "seg_logits"))
        gt = _data(_field(s, "gt_sem_seg"))
        if gt is None and gts is not None and i < len(gts):
            gt = _data(_field(gts[i], "gt_sem_seg"))
        if pred is None or gt is None or not hasattr(pred, "dim") or not hasattr(gt, "dim"):
            continue
        out.append((pred, gt))
    return out


class _Impl:
    def __init__(self, metric_key: str | None = None, fraction: bool | None = False) -> None:
        self.metric_key = metric_key
        self.fraction = fraction
        self._last_step = None
        self._silent = 0
        self._noted = False
        self._watched = False

    def before_train(self, runner) -> None:
        if not B.active() or self._watched:
            return
        model = getattr(runner, "model", None)
        model = getattr(model, "module", model)   # DDP / MMDistributedDataParallel
        if model is not None:
            self._watched = True
            B.watch(model)
        B.report_class_names(_dataset_classes(runner), "mmseg")
        _report_reduce_zero_label(runner)

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        s = B.shim()
        if s is None:
            return
        step = int(s.step)
        if self._last_step is not None and step == self._last_step:
            self._silent += 1
            if self._silent >= 8 and not self._noted:
                self._noted = True
                B.note("training iterations pass without a backward() the shim can see", "adapter:mmseg")
        else:
            self._silent = 0
        self._last_step = step

    def after_val_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        if not B.active():
            return
        try:
            import torch

            if not B.should_feed():
                return
            for pred, gt in pairs_from_outputs(outputs, data_batch):
                if gt.dim() == 2:
                    gt = gt[None]
                if pred.dim() == 2:
                    pred = pred[None]
                if pred.is_floating_point() and pred.dim() == 3 and pred.shape[0] > 1:
                    pred = pred[None]             # logits [C, H, W] -> [1, C, H, W]
                elif pred.dim() == 3 and pred.shape[0] == 1 and not pred.is_floating_point():
                    pass                          # class map [1, H, W]
                else:
                    continue
                if gt.dim() == 3 and gt.shape[0] == 1:
                    B.log_eval(pred, gt.to(torch.long) if gt.dtype == torch.uint8 else gt)
        except Exception as exc:
            B._fail(B.shim(), "adapter:mmseg.val_iter", exc)

    def after_val_epoch(self, runner, metrics=None) -> None:
        if not B.active():
            return
        try:
            if B.eval_open():
                B.end_eval()
            B.report_framework_miou(metrics, self.metric_key, self.fraction, "mmengine")
        except Exception as exc:
            B._fail(B.shim(), "adapter:mmseg.val_epoch", exc)


_CLS = None


def _hook_class():
    global _CLS
    if _CLS is not None:
        return _CLS
    from mmengine.hooks import Hook

    class SegwatchHook(Hook):
        """segwatch for mmengine / mmsegmentation runners (see ``segwatch.adapters.mmseg``)."""
        priority = "VERY_LOW"

        def __init__(self, metric_key: str | None = None, fraction: bool | None = False):
            self._sw = _Impl(metric_key, fraction)

        def before_train(self, runner) -> None:
            self._sw.before_train(runner)

        def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
            self._sw.after_train_iter(runner, batch_idx, data_batch, outputs)

        def after_val_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
            self._sw.after_val_iter(runner, batch_idx, data_batch, outputs)

        def after_val_epoch(self, runner, metrics=None) -> None:
            self._sw.after_val_epoch(runner, metrics)

    SegwatchHook.__module__ = __name__
    try:
        from mmengine.registry import HOOKS
        HOOKS.register_module(module=SegwatchHook, force=True)
    except Exception:
        pass
    _CLS = SegwatchHook
    return _CLS


def attach(runner) -> None:
    """Register a SegwatchHook on a constructed Runner (unless it has one)."""
    hooks = getattr(runner, "hooks", None) or getattr(runner, "_hooks", [])
    if not any(type(h).__name__ == "SegwatchHook" for h in hooks):
        runner.register_hook(_hook_class()())


def __getattr__(name: str):
    if name == "SegwatchHook":
        return _hook_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
