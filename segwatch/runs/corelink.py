"""The links of the supervisor and of replay to ``segwatch.core`` and ``segwatch.config``.

All access goes through here so that the supervisor (and a replay) degrades instead of failing when
the diagnosis layer raises (a bug there must never take a training run down with it):
``SafeState`` wraps ``RunState`` and counts ingest errors; if core cannot be imported at
all, a minimal state (step, loss, script mIoU, no findings) stands in.
"""
from __future__ import annotations

import math
import traceback
from typing import Any

from segwatch.protocol import as_float

REPORT_SCHEMA = "segwatch.report/1"


def load_config(path: str | None):
    """Config from ``path`` (or the defaults). Raises the config module's ConfigError."""
    from segwatch import config as cfgmod

    if path:
        return cfgmod.load_config(path)
    return cfgmod.default_config()


def config_error_type() -> type[BaseException]:
    try:
        from segwatch.config import ConfigError

        return ConfigError
    except Exception:  # pragma: no cover - config module missing
        return ValueError


def config_to_dict(cfg: Any) -> dict | None:
    if cfg is None:
        return None
    try:
        return cfg.to_dict()
    except Exception:
        return None


def config_from_dict(d: dict | None, source: str = "<meta.json>"):
    if not d:
        return None
    try:
        from segwatch.config import Config

        return Config.from_dict(d, source=source)
    except Exception:
        return None


def policy_of(cfg: Any) -> dict:
    pol = getattr(cfg, "policy", None)
    return {
        "on_collapse": getattr(pol, "on_collapse", "warn") or "warn",
        "on_nonfinite": getattr(pol, "on_nonfinite", "warn") or "warn",
    }


class _MiniState:
    """Stand-in for core's RunState when it cannot be imported: no diagnosis."""

    def __init__(self, config: Any = None, lang: str = "en") -> None:
        self.config = config
        self.lang = lang
        self.script = None
        self.status = "starting"
        self.step = 0
        self.findings: dict = {}
        self.miou: list = []
        self.script_metrics: list = []
        self.actions: list = []
        self.num_classes = None
        self._loss = None
        self._grad = None
        self.steps_per_sec = None

    def ingest(self, ev: dict) -> list:
        t = ev.get("type")
        if isinstance(ev.get("step"), int) and t in ("step", "batch", "preds", "eval", "bye"):
            self.step = max(self.step, ev["step"])
        if t == "hello":
            self.script = ev.get("script")
        elif t == "step":
            try:
                self._loss = as_float(ev.get("loss"))
                self._grad = as_float(ev.get("grad_norm"))
            except Exception:
                pass
        elif t == "script_metric":
            self.script_metrics.append((ev.get("step", self.step), ev.get("value")))
        elif t == "status":
            self.status = ev.get("status")
        elif t == "action":
            self.actions.append(ev)
        return []

    def report(self, exit_code=None) -> dict:
        return {
            "schema": REPORT_SCHEMA,
            "script": self.script,
            "exit_code": exit_code,
            "steps": self.step,
            "action": None,
            "findings": [],
            "checklist": [],
            "miou": [[s, v] for s, v in self.script_metrics],
        }


#: environment variables that size numpy's BLAS thread pool at its import
_BLAS_THREADS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def _import_core():
    """Import core (and numpy) with a one-thread BLAS pool.

    numpy's OpenBLAS starts a thread per core at import: ~60 ms of CPU measured here, spent
    on the cores the training is using, for a process whose numpy work is a few small
    arrays per event. The variables are set only for the import and restored at once: the
    training (launched with this process's environment) keeps the user's settings."""
    import os
    import sys

    # numpy already imported: its pool exists, nothing to set
    unset = [] if "numpy" in sys.modules else [k for k in _BLAS_THREADS if k not in os.environ]
    try:
        for k in unset:
            os.environ[k] = "1"
        from segwatch.core.state import RunState
    finally:
        for k in unset:
            os.environ.pop(k, None)
    return RunState


def new_state(config: Any = None, lang: str = "en"):
    try:
        RunState = _import_core()
    except Exception:
        return _MiniState(config, lang)
    return RunState(config, lang=lang)


class SafeState:
    """Wraps a RunState: ingest errors are counted (and the first few kept), never raised.

    The RunState (and with it core and numpy, a few hundred ms of imports) is built at the
    first use that needs it, not at construction: the supervisor constructs its state before
    it launches the training, and its ``status`` events (starting, running) need no
    diagnosis, so the imports overlap the training's own start-up instead of delaying it.
    Those early ``status`` events are held and fed, in order, when the state is built; any
    attribute read builds it first, so what callers see is unchanged."""

    def __init__(self, config: Any = None, lang: str = "en") -> None:
        self.lang = lang
        self._config = config
        self._inner: Any = None
        self._held: list[dict] = []
        self.errors = 0
        self.error_messages: list[str] = []

    @property
    def inner(self) -> Any:
        if self._inner is None:
            try:
                self._inner = new_state(self._config, self.lang)
            except Exception:
                self._inner = _MiniState(self._config, self.lang)
            held, self._held = self._held, []
            for ev in held:
                self._ingest(ev)
        return self._inner

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("_inner", "_held", "_config"):
            raise AttributeError(name)   # copy/pickle probes, or a half-built instance
        return getattr(self.inner, name)

    def ingest(self, ev: dict) -> list:
        if self._inner is None and ev.get("type") == "status" and len(self._held) < 64:
            self._held.append(ev)
            return []
        self.inner
        return self._ingest(ev)

    def _ingest(self, ev: dict) -> list:
        try:
            return list(self._inner.ingest(ev) or [])
        except Exception as exc:
            self.errors += 1
            if len(self.error_messages) < 5:
                self.error_messages.append(
                    f"{ev.get('type')}: {type(exc).__name__}: {exc} "
                    f"({traceback.extract_tb(exc.__traceback__)[-1].filename.rsplit('/', 1)[-1]}:"
                    f"{traceback.extract_tb(exc.__traceback__)[-1].lineno})"
                )
            return []

    def report(self, exit_code=None) -> dict:
        try:
            rep = self.inner.report(exit_code)
            if not isinstance(rep, dict):
                raise TypeError("RunState.report did not return a dict")
            return rep
        except Exception as exc:
            self.errors += 1
            self.error_messages.append(f"report: {type(exc).__name__}: {exc}")
            rep = _MiniState().report(exit_code)
            rep["steps"] = safe_int(getattr(self.inner, "step", 0))
            return rep


def safe_int(v: Any) -> int:
    try:
        return int(v)
    except Exception:
        return 0


def last_value(series: Any) -> float | None:
    """The last value of a core ``Series`` (or a list of pairs), or None."""
    if series is None:
        return None
    try:
        if len(series) == 0:
            return None
    except TypeError:
        pass
    try:
        last = series.last()
    except AttributeError:
        try:
            last = series[-1]
        except Exception:
            return None
    except Exception:
        return None
    if isinstance(last, (tuple, list)):
        last = last[-1] if last else None
    try:
        v = float(last)
    except (TypeError, ValueError):
        return None
    return v


def latest_eval_miou(state: Any) -> tuple[float | None, float | None]:
    """segwatch's own (guide, mmseg) mIoU of the latest evaluation, in percent."""
    try:
        e = state.latest_eval()
        if e:
            g, m = e.get("miou"), e.get("miou_mmseg")
            return (float(g) if g is not None else None, float(m) if m is not None else None)
    except Exception:
        pass
    try:
        last = state.miou[-1]
        return (float(last[1]), float(last[2]) if len(last) > 2 and last[2] is not None else None)
    except Exception:
        return None, None


def finite(v: float | None) -> bool:
    return v is not None and math.isfinite(v)
