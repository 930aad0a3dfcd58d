"""segwatch: a terminal supervisor for semantic-segmentation training.

Public API for training code (all cheap no-ops when the script does not run under
``segwatch run`` / ``python -m segwatch.shim``; importing segwatch does not import torch):

* ``watch(model, num_classes=None, ignore_index=None)`` - name the root model explicitly.
* ``log_eval(logits, labels)`` - feed one evaluation batch (logits [B,C,H,W] or class map).
* ``end_eval()`` - close the evaluation pass fed with ``log_eval``.
* ``log_metric(name, value, step=None)`` - report a metric the script computed (``script_metric``).
"""
from __future__ import annotations

import sys as _sys

__version__ = "0.1.0"

__all__ = ["watch", "log_eval", "end_eval", "log_metric", "active", "__version__"]


def _shim():
    mod = _sys.modules.get("segwatch.shim.runtime")
    if mod is None:
        return None
    s = mod.current()
    return s if s is not None and s.installed else None


def active() -> bool:
    """True when running under the segwatch shim."""
    return _shim() is not None


def watch(model, num_classes=None, ignore_index=None) -> None:
    s = _shim()
    if s is not None:
        try:
            s.watch(model, num_classes=num_classes, ignore_index=ignore_index)
        except Exception as exc:
            s._fail("watch", exc)


def log_eval(logits, labels) -> None:
    s = _shim()
    if s is not None:
        s.log_eval(logits, labels)


def end_eval() -> None:
    s = _shim()
    if s is not None:
        s.end_eval()


def log_metric(name, value, step=None) -> None:
    s = _shim()
    if s is not None:
        s.log_metric(name, value, step=step)
