"""PyTorch Lightning: ``SegwatchCallback``.

What the shim already sees in a Lightning run: the DataLoader batches, ``backward`` (Lightning
calls ``loss.backward()``), the optimizer steps and the model (found by its forward).  What
the callback adds:

* **evaluation passes with clear ends**: the pass ends at ``on_validation_epoch_end`` (so a
  ``limit_val_batches`` pass or the sanity check is not taken for an evaluation that raised);
* **logits paired with labels** when ``validation_step`` returns them (a dict with
  ``logits``/``preds`` and ``labels``/``target``, or a logits tensor, the labels taken from
  the batch), resized to the labels; used only where the shim cannot pair them itself;
* **the module's own mIoU**: an mIoU-like entry of ``trainer.callback_metrics``
  (``val_miou``, ``val/mIoU``, ``val_jaccard``...) as ``script_metric`` (percent);
* a note when training batches pass without a ``backward`` the shim could see.

By hand::

    from segwatch.adapters.lightning import SegwatchCallback
    trainer = L.Trainer(callbacks=[SegwatchCallback()])

Under ``segwatch run`` with ``adapter: auto`` it is added to every ``Trainer`` automatically.
A no-op outside segwatch.  Works with ``lightning`` and with ``pytorch_lightning``.
"""
from __future__ import annotations

from . import _base as B

__all__ = ["SegwatchCallback", "make_callback", "attach"]


class _Impl:
    """The callback's behaviour, independent of which Lightning package provides the base."""

    def __init__(self, metric_key: str | None = None, fraction: bool | None = None) -> None:
        self.metric_key = metric_key
        self.fraction = fraction
        self._last_step = None
        self._silent_batches = 0
        self._noted = False

    # training ---------------------------------------------------------------------------
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, *args) -> None:
        s = B.shim()
        if s is None:
            return
        try:
            step = int(s.step)
            if self._last_step is not None and step == self._last_step:
                self._silent_batches += 1
                if self._silent_batches >= 8 and not self._noted:
                    self._noted = True
                    B.note("training batches pass without a backward() the shim can see (manual or "
                           "fused optimisation?): losses and gradients are not observed", "adapter:lightning")
            else:
                self._silent_batches = 0
            self._last_step = step
        except Exception as exc:
            B._fail(s, "adapter:lightning.train", exc)

    # evaluation --------------------------------------------------------------------------
    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if not B.active():
            return
        try:
            if not B.should_feed():
                return
            logits, labels = B.logits_and_labels(outputs, batch)
            if logits is not None:
                B.log_eval(logits, labels)
        except Exception as exc:
            B._fail(B.shim(), "adapter:lightning.val_batch", exc)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if B.active() and B.eval_open():
            self._end_pass(trainer)

    def on_sanity_check_end(self, trainer, pl_module) -> None:
        if B.active() and B.eval_open():
            B.mark_sanity()
            B.end_eval()

    @staticmethod
    def _end_pass(trainer) -> None:
        if getattr(trainer, "sanity_checking", False):
            B.mark_sanity()
        B.end_eval()

    def on_validation_end(self, trainer, pl_module) -> None:
        if not B.active():
            return
        try:
            if B.eval_open():
                self._end_pass(trainer)
            if getattr(trainer, "sanity_checking", False):
                return
            B.report_framework_miou(getattr(trainer, "callback_metrics", {}), self.metric_key, self.fraction, "lightning")
        except Exception as exc:
            B._fail(B.shim(), "adapter:lightning.val_end", exc)


_CLASSES: dict = {}


def make_callback(base):
    """A Callback subclass of ``base`` (``lightning.pytorch.Callback`` or
    ``pytorch_lightning.Callback``) with segwatch's behaviour."""
    cls = _CLASSES.get(base)
    if cls is None:
        names = ("on_train_batch_end", "on_validation_batch_end", "on_validation_epoch_end",
                 "on_sanity_check_end", "on_validation_end")

        def __init__(self, metric_key: str | None = None, fraction: bool | None = None):
            base.__init__(self)
            self._sw = _Impl(metric_key, fraction)

        ns = {"__init__": __init__, "__doc__": __doc__, "__module__": __name__}
        for n in names:
            def hook(self, *args, _n=n, **kwargs):
                return getattr(self._sw, _n)(*args, **kwargs)
            hook.__name__ = n
            ns[n] = hook
        cls = type("SegwatchCallback", (base,), ns)
        _CLASSES[base] = cls
    return cls


def _base_for(obj=None):
    mod = type(obj).__module__ if obj is not None else ""
    if mod.startswith("pytorch_lightning"):
        import pytorch_lightning as pl
        return pl.Callback
    try:
        import lightning.pytorch as pl
    except ImportError:
        import pytorch_lightning as pl
    return pl.Callback


def attach(trainer) -> None:
    """Add a SegwatchCallback to a constructed Trainer (unless it has one)."""
    cbs = getattr(trainer, "callbacks", None)
    if not isinstance(cbs, list):
        return
    if any(type(c).__name__ == "SegwatchCallback" for c in cbs):
        return
    cbs.append(make_callback(_base_for(trainer))())


def __getattr__(name: str):
    if name == "SegwatchCallback":
        return make_callback(_base_for())
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
