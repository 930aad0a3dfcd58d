"""``adapter: auto``: attach the right adapter to an unmodified script.

One mechanism covers every framework: a thin wrapper around ``builtins.__build_class__``
(the function every ``class`` statement calls).  After the original has built the class the
wrapper looks at its module and name (one dict lookup) and at two attribute names, so its
cost is about 2 microseconds per class definition and nothing afterwards:

* ``lightning.pytorch.trainer.trainer.Trainer`` / ``pytorch_lightning...Trainer``: ``__init__``
  is wrapped to append a ``SegwatchCallback`` (unless the user added one);
* ``transformers.trainer.Trainer``: ``__init__`` is wrapped to ``add_callback`` a
  ``SegwatchTrainerCallback``;
* ``mmengine.runner.runner.Runner``: ``__init__`` is wrapped to ``register_hook`` a
  ``SegwatchHook``;
* any class with ``update`` and ``compute_iou`` (the guide's ``Metrics``): wrapped by
  ``adapters.dformer``.

Frameworks imported before ``autodetect()`` runs are patched at once from ``sys.modules``.
Everything catches its own errors; with ``adapter: none`` nothing is installed; with a named
adapter only that one is.
"""
from __future__ import annotations

import builtins
import functools
import json
import os
import sys

from . import _base as B

_ORIG_BUILD_CLASS = None
_ENABLED: set[str] = set()
ALL = ("dformer", "lightning", "hf", "mmseg")

# (module, qualname) -> adapter name
_TARGETS = {
    ("lightning.pytorch.trainer.trainer", "Trainer"): "lightning",
    ("pytorch_lightning.trainer.trainer", "Trainer"): "lightning",
    ("transformers.trainer", "Trainer"): "hf",
    ("mmengine.runner.runner", "Runner"): "mmseg",
}
_INIT_PATCHED = "__segwatch_init_patched__"


def enable(*names: str) -> None:
    _ENABLED.update(names)


def enabled() -> set[str]:
    return set(_ENABLED)


def _on_class(cls) -> None:
    d = cls.__dict__
    if "dformer" in _ENABLED and "compute_iou" in d and ("update" in d or hasattr(cls, "update")):
        from . import dformer
        dformer.patch_metrics_class(cls)
        return
    key = (d.get("__module__"), d.get("__qualname__", cls.__name__))
    name = _TARGETS.get(key)
    if name is not None and name in _ENABLED:
        patch_framework_class(name, cls)


def _build_class(func, name, *bases, **kwargs):
    cls = _ORIG_BUILD_CLASS(func, name, *bases, **kwargs)
    try:
        if _ENABLED and isinstance(cls, type):
            _on_class(cls)
    except Exception:
        pass
    return cls


def install_class_hook() -> None:
    global _ORIG_BUILD_CLASS
    if _ORIG_BUILD_CLASS is not None:
        return
    _ORIG_BUILD_CLASS = builtins.__build_class__
    builtins.__build_class__ = _build_class


def uninstall_class_hook() -> None:
    global _ORIG_BUILD_CLASS
    if _ORIG_BUILD_CLASS is not None and builtins.__build_class__ is _build_class:
        builtins.__build_class__ = _ORIG_BUILD_CLASS
    _ORIG_BUILD_CLASS = None


def _attach(name: str, obj) -> None:
    """Add the adapter's callback/hook to a freshly constructed Trainer/Runner."""
    if name == "lightning":
        from .lightning import attach
    elif name == "hf":
        from .hf import attach
    elif name == "mmseg":
        from .mmseg import attach
    else:
        return
    attach(obj)


def patch_framework_class(name: str, cls) -> bool:
    if cls.__dict__.get(_INIT_PATCHED):
        return False
    orig = cls.__init__

    @functools.wraps(orig)
    def __init__(self, *args, **kwargs):
        orig(self, *args, **kwargs)
        if B.active() and not getattr(self, "_segwatch_attached", False):
            try:
                self._segwatch_attached = True
                _attach(name, self)
            except Exception as exc:
                s = B.shim()
                if s is not None:
                    B._fail(s, f"adapter:{name}.attach", exc)

    cls.__init__ = __init__
    setattr(cls, _INIT_PATCHED, True)
    return True


def _patch_loaded() -> list[str]:
    done = []
    for (mod, qual), name in _TARGETS.items():
        if name not in _ENABLED:
            continue
        m = sys.modules.get(mod)
        cls = getattr(m, qual, None) if m is not None else None
        if isinstance(cls, type):
            patch_framework_class(name, cls)
            done.append(name)
    if "dformer" in _ENABLED:
        from . import dformer
        main = sys.modules.get("__main__")
        for m in (main,):
            for v in list(getattr(m, "__dict__", {}).values()):
                if isinstance(v, type) and dformer.is_metrics_class(v):
                    dformer.patch_metrics_class(v)
    return done


def _setting(config) -> str:
    """The ``adapter:`` setting from a Config, a config dict, or SEGWATCH_CONFIG."""
    try:
        if config is not None:
            v = getattr(config, "adapter", None)
            if v is None and isinstance(config, dict):
                v = config.get("adapter")
                if v is None and isinstance(config.get("segwatch"), dict):
                    v = config["segwatch"].get("adapter")
            if isinstance(v, str):
                return v
        raw = os.environ.get("SEGWATCH_CONFIG")
        if raw:
            d = json.loads(raw)
            if isinstance(d, dict) and isinstance(d.get("adapter"), str):
                return d["adapter"]
    except Exception:
        pass
    return "auto"


def under_segwatch() -> bool:
    """Running under the shim, or in a child that ``segwatch run`` is starting."""
    return B.active() or bool(os.environ.get("SEGWATCH_RUN_DIR") or os.environ.get("SEGWATCH_SOCKET"))


def autodetect(config=None, force: bool = False) -> list[str]:
    """Arm the adapters that the ``adapter:`` setting selects.  Returns the armed names.

    Meant to be called once by the shim after it installed its hooks (see docs/ADAPTERS.md);
    harmless anywhere else: outside segwatch (and without ``force``) it does nothing."""
    try:
        if not force and not under_segwatch():
            return []
        setting = _setting(config)
        if setting == "none":
            return []
        names = ALL if setting == "auto" else ((setting,) if setting in ALL else ())
        if not names:
            return []
        enable(*names)
        install_class_hook()
        _patch_loaded()
        return sorted(names)
    except Exception:
        return []
