"""What the loss watch (segwatch/shim/lossfn.py) costs a training step once the loss's
configuration is known: a loss call through the patched ``_Loss.__call__`` /
``F.cross_entropy`` vs the same call unpatched, alternating blocks in one process, medians.

    python benchmarks/lossfn_overhead.py [--calls 2000] [--blocks 15]

Prints microseconds per call and the ratio patched / unpatched (the shim's model-discovery
hooks stopped: they are not this benchmark's), for a tiny call (where the
wrapper's Python cost shows most) and a segmentation-sized one. Also the one-off cost of an
observed call (configuration, weight summary, the target's out-of-range values).
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from segwatch import shim as S
from segwatch.shim.emitter import MemoryEmitter


def _time(fn, n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n * 1e6


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--calls", type=int, default=2000)
    p.add_argument("--blocks", type=int, default=15)
    a = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    w = torch.rand(13) + 0.5
    crit = nn.CrossEntropyLoss(weight=w, ignore_index=255)
    cases = {
        "tiny 2x13x8x8": (torch.randn(2, 13, 8, 8), torch.randint(0, 13, (2, 8, 8))),
        "seg 4x13x64x64": (torch.randn(4, 13, 64, 64), torch.randint(0, 13, (4, 64, 64))),
    }
    for name, (x, y) in cases.items():
        calls = a.calls if "tiny" in name else max(50, a.calls // 20)
        res = {"module": ([], []), "functional": ([], [])}
        for _ in range(a.blocks):
            for patched in (False, True):
                shim = None
                if patched:
                    shim = S.install(emitter=MemoryEmitter(), hello=False)
                    shim._lf_next = 10 ** 9          # configuration known: the stable state
                    shim._stop_discovery()           # the model-discovery hooks are not this benchmark's
                res["module"][patched].append(_time(lambda: crit(x, y), calls))
                res["functional"][patched].append(
                    _time(lambda: F.cross_entropy(x, y, weight=w, ignore_index=255), calls))
                if patched:
                    S.uninstall(finish=False)
        for form, (off, on) in res.items():
            mo, mn = statistics.median(off), statistics.median(on)
            print(f"{name:16s} {form:10s} unpatched {mo:8.2f} us  patched {mn:8.2f} us  "
                  f"ratio {mn / mo:.3f}  (+{mn - mo:.2f} us/call)")
    # the wrapper alone, around a no-op (its Python cost, without the loss's own noise)
    import timeit
    shim = S.install(emitter=MemoryEmitter(), hello=False)
    shim._stop_discovery()
    shim._lf_next = 10 ** 9

    def noop(*args, **kwargs):
        return None

    wrapped = shim._lf_functional("cross_entropy", noop)
    n = 200_000
    base = min(timeit.repeat(lambda: noop(1, 2), number=n, repeat=5)) / n * 1e6
    wrap = min(timeit.repeat(lambda: wrapped(1, 2), number=n, repeat=5)) / n * 1e6
    S.uninstall(finish=False)
    print(f"wrapper alone (stable state): +{wrap - base:.2f} us per loss call")
    # one observed call (what the first steps and one step in 100 pay)
    x, y = cases["seg 4x13x64x64"]
    shim = S.install(emitter=MemoryEmitter(), hello=False)
    obs = []
    for i in range(20):
        shim._lf_known.clear()
        shim._lf_weights.clear()
        t0 = time.perf_counter()
        shim._lf_observe(crit, None, (x, y), {})
        obs.append((time.perf_counter() - t0) * 1e6)
    S.uninstall(finish=False)
    print(f"observed call (seg 4x13x64x64, weight summary + target check + event): "
          f"median {statistics.median(obs):.0f} us")


if __name__ == "__main__":
    main()
