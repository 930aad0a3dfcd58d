"""How many events per second the app sustains, and its memory after 10^6 step events.

The events go through the same path as a live run: a client's ``events()`` generator
read by the app's reader worker thread, posted as ``EventsArrived`` batches, ingested
into RunState on the app's thread, with the 10 Hz refresh of the header and the visible
panel running all along (headless, via ``App.run_test``). The events are generated on
the fly (not held in a list), so the RSS is the app's own.

    python benchmarks/tui_ingest.py                 # 10^6 step events + 10^5 mixed events
    python benchmarks/tui_ingest.py --events 200000 --mixed 0

Goals: >= 5,000 events/s; RSS < 300 MB after 10^6 step events.
"""
from __future__ import annotations

import argparse
import asyncio
import math
import os
import pathlib
import sys
import time

import psutil

ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from segwatch.protocol import make_event  # noqa: E402
from segwatch.tui import SegwatchApp  # noqa: E402

GOAL_RATE = 5000.0
GOAL_RSS_MB = 300.0
T0 = 1_700_000_000.0
C = 37
LAYERS = [f"backbone.stages.{i}.block.weight" for i in range(8)]


def step_events(n: int):
    for i in range(1, n + 1):
        g = 2.0 * math.exp(-i / 200000.0)
        yield make_event(
            "step", t=T0 + i * 0.01, rank=0, world_size=1, step=i,
            loss=2.0 + 0.5 * math.sin(i / 50.0), grad_norm=g, grad_nonfinite=0, lr=[8e-5],
            layer_norms=[[name, g * 0.5 ** k] for k, name in enumerate(LAYERS)],
            update_ratio=1e-3, backward_total=i, optimizer_steps_total=i, loss_nonfinite_total=0,
            epoch=i // 1000,
        )


def mixed_events(n: int):
    """A training's mix: per step one batch, one preds and one step event (+ output)."""
    hist = [1000 * (k + 1) for k in range(C)]
    i = 0
    emitted = 0
    while emitted < n:
        i += 1
        t = T0 + i * 0.05
        yield make_event("batch", t=t, rank=0, world_size=1, step=i, phase="train", index=i % 500,
                         length=500, epoch=i // 500,
                         labels={"key": "label", "shape": [2, 64, 64], "dtype": "int64", "min": 0,
                                 "max": C - 1, "total": sum(hist), "ignore": 0, "ignore_value": 255,
                                 "hist": hist, "oor": {}, "fractional": 0, "boundary": 0.0},
                         inputs=[{"key": "rgb", "shape": [2, 3, 64, 64], "dtype": "float32", "mean": 0.0,
                                  "std": 1.0, "min": -2.0, "max": 2.0, "nonfinite": 0}])
        yield make_event("preds", t=t + 0.01, rank=0, world_size=1, step=i, phase="train",
                         shape=[2, C, 64, 64], channels=C, hist=hist, gt_hist=hist, unique=C,
                         correct=1000, valid=sum(hist))
        yield make_event("step", t=t + 0.02, rank=0, world_size=1, step=i, loss=2.0, grad_norm=1.0,
                         lr=[8e-5], layer_norms=[[name, 0.1] for name in LAYERS], epoch=i // 500)
        emitted += 3
        if i % 20 == 0:
            yield make_event("output", t=t + 0.03, stream="stdout", line=f"iter {i} loss 2.0")
            emitted += 1


class GeneratedClient:
    def __init__(self, gen):
        self.gen = gen

    def events(self, follow: bool = True):
        yield from self.gen

    def control(self, cmd):
        return {"ok": False, "error": "benchmark"}


async def drive(gen, label: str, tab: str = "overview") -> dict:
    proc = psutil.Process()
    app = SegwatchApp(client=GeneratedClient(gen), live=True)
    rss0 = proc.memory_info().rss
    start = time.perf_counter()
    async with app.run_test(size=(100, 32)) as pilot:
        app.action_tab(tab)
        last_report = start
        while not app.view.stream_ended:
            await pilot.pause(0.05)
            now = time.perf_counter()
            if now - last_report >= 5:
                last_report = now
                print(f"  {label}: {app.view.events:,} events, {app.view.events / (now - start):,.0f}/s, "
                      f"RSS {proc.memory_info().rss / 2**20:.0f} MB", flush=True)
        await pilot.pause(0.2)   # the last refresh
        elapsed = time.perf_counter() - start
        rss = proc.memory_info().rss
        n = app.view.events
        refreshes = app.refreshes
        errors = app.ingest_errors
        step = app.state.step
    return {"events": n, "seconds": elapsed, "rate": n / elapsed, "rss_mb": rss / 2**20,
            "rss0_mb": rss0 / 2**20, "refreshes": refreshes, "ingest_errors": errors, "step": step}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=1_000_000, help="step events for the RSS run")
    ap.add_argument("--mixed", type=int, default=100_000, help="mixed batch/preds/step events (0: skip)")
    ns = ap.parse_args()
    print(f"tui_ingest: python {sys.version.split()[0]}, pid {os.getpid()}, "
          f"{psutil.cpu_count()} CPUs", flush=True)

    results = {}
    if ns.mixed:
        r = asyncio.run(drive(mixed_events(ns.mixed), "mixed"))
        results["mixed"] = r
        print(f"mixed events: {r['events']:,} in {r['seconds']:.1f} s = {r['rate']:,.0f} events/s "
              f"({r['refreshes']} refreshes, RSS {r['rss_mb']:.0f} MB)", flush=True)
    r = asyncio.run(drive(step_events(ns.events), "step"))
    results["step"] = r
    print(f"step events: {r['events']:,} in {r['seconds']:.1f} s = {r['rate']:,.0f} events/s "
          f"({r['refreshes']} refreshes, {r['ingest_errors']} ingest errors, last step {r['step']:,})", flush=True)
    print(f"RSS after {r['events']:,} step events: {r['rss_mb']:.0f} MB (before: {r['rss0_mb']:.0f} MB)",
          flush=True)

    rate = min(x["rate"] for x in results.values())
    ok_rate = rate >= GOAL_RATE
    ok_rss = r["rss_mb"] < GOAL_RSS_MB
    verdict = "PASS" if ok_rate and ok_rss else "FAIL"
    print(f"SUMMARY tui_ingest: {rate:,.0f} events/s sustained (goal >= {GOAL_RATE:,.0f}: "
          f"{'ok' if ok_rate else 'MISSED'}), RSS {r['rss_mb']:.0f} MB after {r['events']:,} step events "
          f"(goal < {GOAL_RSS_MB:.0f} MB: {'ok' if ok_rss else 'MISSED'}) -> {verdict}", flush=True)
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
