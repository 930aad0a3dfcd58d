"""``python -m segwatch.shim SCRIPT [ARGS...]``: run a training script with the shim installed.

The script runs as ``__main__`` via ``runpy.run_path`` with ``sys.argv = [SCRIPT, *ARGS]`` and
``sys.path[0]`` = the script's directory, as ``python SCRIPT ARGS`` would. Its exit status and
exceptions propagate unchanged: ``SystemExit`` codes are kept, an uncaught exception prints
its traceback (without the shim's own frames) and exits with status 1.

Environment: ``SEGWATCH_SOCKET`` (Unix socket of the supervisor), ``SEGWATCH_RUN_DIR``
(fallback file ``events.shim.jsonl`` there), ``SEGWATCH_CONFIG`` (resolved config as JSON),
``SEGWATCH_DEBUG=1`` (every probe every step), ``SEGWATCH_FAULT_INJECT=name[,name]`` (tests:
make the named probes raise, to prove training goes on).
"""
from __future__ import annotations

import json
import os
import runpy
import sys


def _config_from_env() -> tuple[dict | None, str | None]:
    raw = os.environ.get("SEGWATCH_CONFIG")
    if not raw:
        return None, None
    try:
        cfg = json.loads(raw)
        if not isinstance(cfg, dict):
            return None, "SEGWATCH_CONFIG is not a JSON object"
        return cfg, None
    except ValueError as exc:
        return None, f"SEGWATCH_CONFIG is not valid JSON: {exc}"


def _trim_tb(tb, script_path: str):
    """Drop the leading frames (this launcher, runpy) so the traceback starts in the script."""
    t = tb
    while t is not None:
        fn = os.path.abspath(t.tb_frame.f_code.co_filename)
        if fn == script_path:
            return t
        t = t.tb_next
    return tb


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: python -m segwatch.shim SCRIPT [ARGS...]", file=sys.stderr)
        return 2
    script, args = argv[0], argv[1:]
    path = os.path.abspath(script)
    if not os.path.isfile(path):
        print(f"segwatch.shim: can't open file {script!r}: no such file", file=sys.stderr)
        return 2
    shim = None
    try:
        from .emitter import emitter_from_env
        from .runtime import install
        cfg, cfg_err = _config_from_env()
        shim = install(config=cfg, emitter=emitter_from_env(), debug=os.environ.get("SEGWATCH_DEBUG") == "1",
                       script=path, fault=os.environ.get("SEGWATCH_FAULT_INJECT"), register_atexit=True,
                       argv=[script, *args])
        if cfg_err:
            shim.note(cfg_err, "config")
        try:  # framework adapters (Lightning, HF Trainer, mmengine, Metrics classes): docs/ADAPTERS.md
            from segwatch.adapters import autodetect

            autodetect(cfg)
        except Exception as exc:
            shim.note(f"adapters not armed: {type(exc).__name__}: {exc}", "adapters")
    except Exception as exc:  # the shim must never stop training from starting
        print(f"segwatch.shim: instrumentation disabled: {type(exc).__name__}: {exc}", file=sys.stderr)
        shim = None

    sys.argv = [script, *args]
    sys.path[0] = os.path.dirname(path)
    try:
        runpy.run_path(path, run_name="__main__")
    except SystemExit as exc:
        if shim is not None:
            shim.finish(reason=f"SystemExit({exc.code!r})")
        raise
    except KeyboardInterrupt:
        if shim is not None:
            shim.finish(reason="KeyboardInterrupt")
        raise
    except BaseException as exc:
        if shim is not None:
            shim.finish(reason=f"exception: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300])
        tb = _trim_tb(exc.__traceback__, path)
        exc = exc.with_traceback(tb)
        sys.excepthook(type(exc), exc, tb)
        return 1
    if shim is not None:
        shim.finish(reason="finished")
    return 0


if __name__ == "__main__":
    sys.exit(main())
