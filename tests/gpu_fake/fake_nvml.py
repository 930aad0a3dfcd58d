"""A fake ``pynvml`` for tests (no GPU needed): the functions segwatch.supervisor.gpu calls.

``SEGWATCH_FAKE_NVML_GPUS`` sets the device count (default 2). Device 0 reports every
process of the importing process's tree as running on it (so the supervisor's training child
is "on" GPU 0), plus a stranger pid 999999 that belongs to no training.
"""
from __future__ import annotations

import os
from types import SimpleNamespace

NVML_TEMPERATURE_GPU = 0
GIB = 1 << 30
_state = {"init": False}


class NVMLError(Exception):
    pass


def nvmlInit():
    _state["init"] = True


def nvmlShutdown():
    _state["init"] = False


def nvmlDeviceGetCount():
    if not _state["init"]:
        raise NVMLError("not initialized")
    return int(os.environ.get("SEGWATCH_FAKE_NVML_GPUS", "2"))


def nvmlDeviceGetHandleByIndex(i):
    if i >= nvmlDeviceGetCount():
        raise NVMLError("bad index")
    return i


def nvmlDeviceGetName(h):
    return b"Fake GPU H100" if h == 0 else "Fake GPU A10"


def nvmlDeviceGetUtilizationRates(h):
    return SimpleNamespace(gpu=87 if h == 0 else 3, memory=40)


def nvmlDeviceGetMemoryInfo(h):
    return SimpleNamespace(used=(12 if h == 0 else 1) * GIB, total=80 * GIB if h == 0 else 24 * GIB,
                           free=0)


def nvmlDeviceGetTemperature(h, sensor):
    return 71 if h == 0 else 35


def nvmlDeviceGetPowerUsage(h):
    return 312_500 if h == 0 else 21_000   # milliwatts


def nvmlDeviceGetEnforcedPowerLimit(h):
    return 700_000 if h == 0 else 150_000


def _tree_pids():
    try:
        import psutil
        me = psutil.Process()
        return [c.pid for c in me.children(recursive=True)]
    except Exception:
        return []


def nvmlDeviceGetComputeRunningProcesses(h):
    if h != 0:
        return []
    procs = [SimpleNamespace(pid=p, usedGpuMemory=3 * GIB) for p in _tree_pids()]
    procs.append(SimpleNamespace(pid=999999, usedGpuMemory=GIB))
    return procs
