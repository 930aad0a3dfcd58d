"""GPU-side rules (issue 19): CUDA memory that keeps growing, CUDA out of memory, steps bound
by the DataLoader.

resource.memory_growing  ``step.cuda_mem.allocated`` (read after each step's backward, so the
                         same phase every step) rises between >= 80 % of consecutive samples
                         among the last <= WINDOW (>= MIN_SAMPLES of them, spanning >= 20
                         training steps), after the first WARMUP samples (the optimizer creates
                         its state at the first step), by >= max(64 MiB, 5 % of the first)
resource.cuda_oom        an output line or the ``bye`` reason names CUDA out of memory
                         (``torch.cuda.OutOfMemoryError``, "CUDA out of memory", "CUDA error:
                         out of memory"); no shim needed
perf.data_bound          ``step.data_wait`` / ``step.wall`` summed over WINDOW step events
                         > 30 %, in two consecutive windows, after the first step event (the
                         first batch waits for worker start-up)
"""
from __future__ import annotations

import re
from collections import deque

from .base import Rule, ffloat, fint, r4

MIB = 1 << 20

#: samples skipped before judging growth: step 1 creates the optimizer state (Adam doubles the
#: parameters' memory), the allocator settles over the next few
MEM_WARMUP = 3
#: samples judged together (at most, at least), and the share of rising steps among them
MEM_WINDOW = 32
MEM_MIN_SAMPLES = 8
MEM_RISING_SHARE = 0.8
#: growth that is not noise: a kept loss graph keeps every activation of its step, tens of MiB
#: for a segmentation model; 64 MiB and 5 % stay above the jitter of variable crop sizes
MEM_MIN_GROWTH = 64 * MIB
MEM_MIN_GROWTH_SHARE = 0.05
MEM_MIN_STEPS = 20

DATA_WINDOW = 8
DATA_SHARE = 0.30
DATA_MIN_WALL = 0.5   # seconds per window: shorter windows are timer noise

_OOM = re.compile(r"CUDA out of memory|OutOfMemoryError|CUDA error: out of memory", re.I)


class ResourceMemoryGrowing(Rule):
    id = "resource.memory_growing"
    events = ("step",)

    def __init__(self) -> None:
        self._seen = 0
        self._window: deque = deque(maxlen=MEM_WINDOW)   # (step, allocated)

    def check(self, state, ev):
        mem = ev.get("cuda_mem")
        if not isinstance(mem, dict):
            return None
        alloc, step = fint(mem.get("allocated")), fint(ev.get("step"))
        if alloc is None or step is None:
            return None
        if self._window and step <= self._window[-1][0]:
            return None
        self._seen += 1
        if self._seen <= MEM_WARMUP:
            return None
        self._window.append((step, alloc))
        if len(self._window) < MEM_MIN_SAMPLES:
            return None
        vals = [a for _, a in self._window]
        rises = sum(1 for a, b in zip(vals, vals[1:]) if b > a)
        growth = vals[-1] - vals[0]
        span = self._window[-1][0] - self._window[0][0]
        if (rises < MEM_RISING_SHARE * (len(vals) - 1) or span < MEM_MIN_STEPS
                or growth < max(MEM_MIN_GROWTH, MEM_MIN_GROWTH_SHARE * vals[0])):
            return None
        per_step = growth / span
        return self.make(state, ev, {
            "from_step": self._window[0][0], "to_step": step,
            "allocated_from_mib": round(vals[0] / MIB, 1), "allocated_to_mib": round(vals[-1] / MIB, 1),
            "growth_mib_per_step": r4(per_step / MIB),
            "rising_steps": f"{rises}/{len(vals) - 1}",
            "reserved_mib": round(fint(mem.get("reserved")) / MIB, 1) if fint(mem.get("reserved")) is not None else None,
            "likely_causes": ("tensors kept across steps (a list of outputs or losses that still hold "
                              "their graph); a loss accumulated with its graph (total += loss instead "
                              "of loss.item()); metrics computed on tensors that require grad"),
        })


#: a traceback's source line (``raise torch.cuda.OutOfMemoryError(``, ``except ...OutOfMemoryError:``)
#: names the class without being the error: the message is the line after it, or the bye reason
_CODE = re.compile(r"^\s*(raise|except|if|elif|while|return|assert|with|try|def|class|import|from)\b"
                   r"|OutOfMemoryError\s*\(")


def _oom_text(ev: dict) -> str | None:
    if ev.get("type") == "output":
        line = ev.get("line")
        if isinstance(line, str) and _CODE.search(line):
            return None
    else:
        line = ev.get("reason")
    if isinstance(line, str) and _OOM.search(line):
        return line.strip()[:300]
    return None


class ResourceCudaOom(Rule):
    id = "resource.cuda_oom"
    events = ("output", "bye")

    def __init__(self) -> None:
        self._done = False

    def check(self, state, ev):
        if self._done:
            return None
        text = _oom_text(ev)
        if text is None:
            return None
        self._done = True
        inputs = []
        for inp in state.last_inputs or ():
            if isinstance(inp, dict):
                inputs.append({"key": inp.get("key"), "shape": inp.get("shape"), "dtype": inp.get("dtype")})
        shape = inputs[0]["shape"] if inputs else None
        ev_step = fint(ev.get("step")) if ev.get("type") == "bye" else None
        return self.make(state, None, {
            "message": text,
            "batch_size": shape[0] if isinstance(shape, list) and shape else None,
            "crop": state.image_shape,
            "inputs": inputs or None,
            "peak_allocated_mib": round(state.cuda_peak / MIB, 1) if state.cuda_peak else None,
            "gpu_total_mib": _gpu_total_mib(state),
        }, step=ev_step if ev_step is not None else state.step)


def _gpu_total_mib(state) -> float | None:
    devices = (state.gpu or {}).get("devices") or ()
    for d in devices:
        if d.get("procs") and fint(d.get("mem_total")):
            return round(fint(d.get("mem_total")) / MIB, 1)
    return None


class PerfDataBound(Rule):
    id = "perf.data_bound"
    events = ("step",)

    def __init__(self) -> None:
        self._events = 0
        self._wait = 0.0
        self._wall = 0.0
        self._n = 0
        self._steps: list[int] = []
        self._high_windows = 0
        self._first_step: int | None = None

    def check(self, state, ev):
        wait, wall = ffloat(ev.get("data_wait")), ffloat(ev.get("wall"))
        if wait is None or wall is None or not (wall > 0) or not (wait >= 0):
            return None
        self._events += 1
        if self._events == 1:   # worker start-up
            return None
        step = fint(ev.get("step")) or 0
        if self._n == 0:
            self._first_step = step
        self._wait += min(wait, wall)
        self._wall += wall
        self._n += 1
        if self._n < DATA_WINDOW:
            return None
        share = self._wait / self._wall if self._wall >= DATA_MIN_WALL else None
        window = (self._first_step, step, self._wait, self._wall)
        self._wait = self._wall = 0.0
        self._n = 0
        if share is None:
            return None
        self._high_windows = self._high_windows + 1 if share > DATA_SHARE else 0
        if self._high_windows < 2:
            return None
        facts = state.loader_facts
        return self.make(state, ev, {
            "data_wait_share": r4(share), "threshold": DATA_SHARE,
            "from_step": window[0], "to_step": window[1],
            "data_wait_s": r4(window[2]), "wall_s": r4(window[3]),
            "num_workers": facts.get("num_workers"), "pin_memory": facts.get("pin_memory"),
            "images_per_s": r4(state.images_per_sec) if state.images_per_sec else None,
        })
