"""The in-process shim: torch hooks that observe a segmentation training without edits.

``python -m segwatch.shim SCRIPT [ARGS...]`` runs SCRIPT with the hooks installed (see
``__main__``). In-process use (benchmarks, tests, notebooks)::

    from segwatch import shim
    s = shim.install(config={...}, emitter=shim.MemoryEmitter())
    ...  # train
    shim.uninstall()          # flushes, emits ``bye``, removes every hook

This package imports torch; ``import segwatch`` does not import it.
"""
from .emitter import BaseEmitter, MemoryEmitter, NullEmitter, ThreadEmitter, emitter_from_env
from .runtime import Shim, current, install, uninstall

__all__ = ["install", "uninstall", "current", "Shim", "BaseEmitter", "MemoryEmitter", "NullEmitter",
           "ThreadEmitter", "emitter_from_env"]
