"""Framework integrations, installed as ``segwatch.adapters``.

Each adapter feeds the shim the same events it produces by itself (``model``, ``eval``,
``script_metric``...), so panels, findings and reports do not depend on which path produced
them, and each is a no-op when the process does not run under segwatch.

* ``segwatch.adapters.dformer``   - RGB-X / DFormer-style loops and the guide's ``Metrics`` class
* ``segwatch.adapters.lightning`` - ``SegwatchCallback`` for PyTorch Lightning
* ``segwatch.adapters.hf``        - ``SegwatchTrainerCallback`` for the Hugging Face Trainer
* ``segwatch.adapters.mmseg``     - ``SegwatchHook`` for mmengine / mmsegmentation
* ``autodetect(config=None)``     - ``adapter: auto``: attach the right one to an unmodified script

Importing this package imports neither torch nor any framework; submodules are loaded on use.
See docs/ADAPTERS.md.
"""
from __future__ import annotations

__all__ = ["autodetect", "dformer", "lightning", "hf", "mmseg"]


def autodetect(config=None, force: bool = False) -> list[str]:
    """Arm the adapters selected by the config's ``adapter:`` key (``auto``: all of them).

    Cheap and safe: wraps ``builtins.__build_class__`` so that the Lightning/HF Trainer, the
    mmengine Runner and Metrics-like classes are patched when they are defined, and patches
    those already imported.  Does nothing outside segwatch unless ``force=True``."""
    from ._autodetect import autodetect as _ad
    return _ad(config, force=force)


def __getattr__(name: str):
    if name in ("dformer", "lightning", "hf", "mmseg"):
        import importlib
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
