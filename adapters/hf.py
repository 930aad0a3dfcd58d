"""Hugging Face ``transformers.Trainer``: ``SegwatchTrainerCallback``.

What the shim already sees in a Trainer run: the DataLoader batches (``pixel_values`` /
``labels``), ``backward`` and the optimizer.  What it cannot do alone: pair the evaluation
logits with the labels, because segmentation models of the hub (SegFormer, UperNet, DPT...)
return logits at 1/4 of the label size and upsample only inside their loss.  The callback:

* hooks the model's forward (once): in evaluation (autograd off) it takes ``labels`` from the
  call and ``logits`` from the output, upsamples the logits to the labels (bilinear, as the
  models' own loss and the usual ``compute_metrics`` do) and feeds ``segwatch.log_eval``
  where the shim could not pair them itself;
* ends the evaluation pass at ``on_evaluate`` and reports the mIoU the Trainer computed
  (``eval_mean_iou``, ``eval_miou``..., a fraction -> percent) as ``script_metric``.

By hand::

    from segwatch.adapters.hf import SegwatchTrainerCallback
    trainer = Trainer(model=model, args=args, ..., callbacks=[SegwatchTrainerCallback()])

Under ``segwatch run`` with ``adapter: auto`` every ``Trainer`` gets one.  A no-op outside
segwatch.
"""
from __future__ import annotations

import weakref

from . import _base as B

__all__ = ["SegwatchTrainerCallback", "attach", "hook_model"]

_HOOKED: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _forward_hook(module, args, kwargs, output):
    if not B.active():
        return None
    try:
        import torch

        if torch.is_grad_enabled():
            return None
        labels = kwargs.get("labels") if kwargs else None
        if labels is None and len(args) >= 2 and isinstance(args[1], torch.Tensor):
            labels = args[1]
        if labels is None:
            return None
        logits = B.pick(output, ("logits",)) if not isinstance(output, torch.Tensor) else output
        if logits is None and isinstance(output, (tuple, list)) and len(output) >= 2:
            logits = output[1] if output[0] is not None and output[0].dim() == 0 else output[0]
        if not isinstance(logits, torch.Tensor) or logits.dim() != 4 or not isinstance(labels, torch.Tensor):
            return None
        if labels.dim() not in (3, 4) or labels.shape[0] != logits.shape[0]:
            return None
        if B.should_feed():
            B.log_eval(logits, labels)
            # accelerate's loader fetches one batch ahead: the loader runs dry before the last
            # batch's forward.  The pass ends at on_evaluate instead.
            B.detach_pass_from_loader()
    except Exception as exc:
        B._fail(B.shim(), "adapter:hf.forward", exc)
    return None


def hook_model(model) -> bool:
    """Register the evaluation forward hook on ``model`` (once per model)."""
    try:
        if model is None or model in _HOOKED:
            return False
        B.report_class_names(getattr(getattr(model, "config", None), "id2label", None), "hf")
        _HOOKED[model] = model.register_forward_hook(_forward_hook, with_kwargs=True)
        return True
    except Exception:
        return False


class _Impl:
    def __init__(self, metric_key: str | None = None, fraction: bool | None = None) -> None:
        self.metric_key = metric_key
        self.fraction = fraction

    def on_init_end(self, args, state, control, model=None, **kwargs):
        if B.active():
            hook_model(model)

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if B.active():
            hook_model(model)

    def on_evaluate(self, args, state, control, metrics=None, model=None, **kwargs):
        if not B.active():
            return
        try:
            hook_model(model)
            if B.eval_open():
                B.end_eval()
            B.report_framework_miou(metrics, self.metric_key, self.fraction, "hf")
        except Exception as exc:
            B._fail(B.shim(), "adapter:hf.evaluate", exc)


def _callback_class():
    from transformers import TrainerCallback

    global _CLS
    try:
        return _CLS
    except NameError:
        pass

    class SegwatchTrainerCallback(TrainerCallback):
        """segwatch for ``transformers.Trainer`` (see ``segwatch.adapters.hf``)."""

        def __init__(self, metric_key: str | None = None, fraction: bool | None = None):
            self._sw = _Impl(metric_key, fraction)

        def on_init_end(self, args, state, control, **kwargs):
            return self._sw.on_init_end(args, state, control, **kwargs)

        def on_train_begin(self, args, state, control, **kwargs):
            return self._sw.on_train_begin(args, state, control, **kwargs)

        def on_evaluate(self, args, state, control, **kwargs):
            return self._sw.on_evaluate(args, state, control, **kwargs)

    SegwatchTrainerCallback.__module__ = __name__
    _CLS = SegwatchTrainerCallback
    return _CLS


def attach(trainer) -> None:
    """Add a SegwatchTrainerCallback to a constructed Trainer (unless it has one) and hook its model."""
    handler = getattr(trainer, "callback_handler", None)
    cbs = getattr(handler, "callbacks", []) if handler is not None else []
    if not any(type(c).__name__ == "SegwatchTrainerCallback" for c in cbs):
        trainer.add_callback(_callback_class()())
    hook_model(getattr(trainer, "model", None))


def __getattr__(name: str):
    if name == "SegwatchTrainerCallback":
        return _callback_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
