"""Per-GPU sampling through NVML (``nvidia-ml-py``, the optional extra ``segwatch[gpu]``).

The supervisor samples, not the shim, so the training pays nothing. Every sample becomes a
``gpu`` event (docs/EVENTS.md) in the run store, so replay and reports see the same values.
Without nvidia-ml-py, without a driver or without a device the sampler is unavailable and
sends nothing: the run looks exactly as before.

The NVML module is injectable: ``NvmlSampler(nvml=module)``, or the environment variable
``SEGWATCH_NVML_MODULE`` naming an importable module with pynvml's functions (tests use a
fake; see tests/gpu_fake/fake_nvml.py).
"""
from __future__ import annotations

import importlib
import os
from typing import Any, Iterable

#: environment variable naming a module to use instead of ``pynvml`` (tests)
NVML_MODULE_ENV = "SEGWATCH_NVML_MODULE"
#: devices and processes per device kept in one event (an 8-GPU node with many processes)
MAX_DEVICES = 16
MAX_PROCS = 16


def load_nvml(name: str | None = None) -> tuple[Any, str | None]:
    """(module, None) or (None, why not)."""
    name = name or os.environ.get(NVML_MODULE_ENV) or "pynvml"
    try:
        return importlib.import_module(name), None
    except Exception as exc:  # ImportError, or a broken install
        return None, f"{name} not importable ({type(exc).__name__})"


def _text(v: Any) -> str:
    return v.decode(errors="replace") if isinstance(v, bytes) else str(v)


class NvmlSampler:
    """Reads utilization, VRAM, temperature, power and this training's processes per GPU.

    ``available`` is False (with ``reason``) when NVML cannot be used; ``sample(pids)`` then
    returns None. A call that fails on one device leaves that field null; a sampler whose
    whole sample fails three times in a row gives up (a driver that went away)."""

    def __init__(self, nvml: Any = None) -> None:
        self.reason: str | None = None
        self.count = 0
        self._failures = 0
        if nvml is None:
            nvml, self.reason = load_nvml()
        self.nvml = nvml
        if nvml is None:
            return
        try:
            nvml.nvmlInit()
            self.count = min(int(nvml.nvmlDeviceGetCount()), MAX_DEVICES)
        except Exception as exc:
            self.reason = f"NVML init failed ({type(exc).__name__})"
            self.nvml = None
            return
        if self.count <= 0:
            self.reason = "no NVIDIA GPU visible"

    @property
    def available(self) -> bool:
        return self.nvml is not None and self.count > 0

    def _call(self, fn: str, *args: Any) -> Any:
        try:
            return getattr(self.nvml, fn)(*args)
        except Exception:
            return None

    def _device(self, i: int, pids: set[int]) -> dict:
        h = self._call("nvmlDeviceGetHandleByIndex", i)
        if h is None:
            return {"index": i, "error": "no handle"}
        dev: dict[str, Any] = {"index": i}
        name = self._call("nvmlDeviceGetName", h)
        dev["name"] = _text(name) if name is not None else None
        util = self._call("nvmlDeviceGetUtilizationRates", h)
        dev["util"] = getattr(util, "gpu", None)
        mem = self._call("nvmlDeviceGetMemoryInfo", h)
        dev["mem_used"] = getattr(mem, "used", None)
        dev["mem_total"] = getattr(mem, "total", None)
        dev["temp"] = self._call("nvmlDeviceGetTemperature", h, getattr(self.nvml, "NVML_TEMPERATURE_GPU", 0))
        mw = self._call("nvmlDeviceGetPowerUsage", h)
        dev["power_w"] = round(mw / 1000.0, 1) if isinstance(mw, (int, float)) else None
        lim = self._call("nvmlDeviceGetEnforcedPowerLimit", h)
        dev["power_limit_w"] = round(lim / 1000.0, 1) if isinstance(lim, (int, float)) else None
        procs = []
        for p in self._call("nvmlDeviceGetComputeRunningProcesses", h) or ():
            pid = getattr(p, "pid", None)
            if pid in pids and len(procs) < MAX_PROCS:
                used = getattr(p, "usedGpuMemory", None)
                procs.append({"pid": pid, "mem": used if isinstance(used, int) else None})
        dev["procs"] = procs
        return dev

    def sample(self, pids: Iterable[int]) -> dict | None:
        """Fields of one ``gpu`` event: ``devices`` (list, one dict per GPU), or None."""
        if not self.available:
            return None
        wanted = {int(p) for p in pids}
        try:
            devices = [self._device(i, wanted) for i in range(self.count)]
        except Exception as exc:
            self._failures += 1
            if self._failures >= 3:
                self.reason = f"NVML failing ({type(exc).__name__})"
                self.nvml = None
            return None
        self._failures = 0
        return {"devices": devices}

    def close(self) -> None:
        if self.nvml is not None:
            self._call("nvmlShutdown")
