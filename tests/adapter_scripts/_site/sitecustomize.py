"""Test-only stand-in for the one-line shim change that docs/ADAPTERS.md asks for
(``segwatch.adapters.autodetect(config)`` at shim start-up).  Put this folder on PYTHONPATH:
in a process that ``segwatch run`` starts (SEGWATCH_RUN_DIR set) it arms the adapters before
the training script runs; anywhere else it does nothing."""
import os

if os.environ.get("SEGWATCH_RUN_DIR") and os.environ.get("SEGWATCH_TEST_AUTODETECT", "1") == "1":
    try:
        from segwatch.adapters import autodetect

        autodetect()
    except Exception:
        pass
