"""The shim watches the whole run: a coverage floor, a schedule that follows the step number.

A 600-step CPU training through the CLI at default settings (``segwatch run --headless``):
after the dense start no probe leaves more than ``sampling.max_interval`` (32) steps between
two samples, and ``step`` events keep coming until the end. Unit tests of the sampler check
the deterministic schedule, the floor over the budget and the budgeted dense start.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from segwatch.shim.sampler import PROBES, Sampler

HERE = Path(__file__).parent
TINY = HERE / "shim_scripts" / "train_tiny.py"
ROOT = HERE.parent
WARMUP = 20


def _largest_gap(steps: list[int]) -> int:
    after = sorted(s for s in set(steps) if s >= WARMUP)
    return max((b - a for a, b in zip(after, after[1:])), default=0)


@pytest.mark.slow
def test_600_steps_at_default_settings_no_probe_gap_over_32(tmp_path):
    run_dir = tmp_path / "run"
    env = {k: v for k, v in os.environ.items()
           if k not in ("SEGWATCH_SOCKET", "SEGWATCH_CONFIG", "SEGWATCH_DEBUG", "SEGWATCH_FAULT_INJECT")}
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, "-m", "segwatch", "run", "--headless", "--run-dir", str(run_dir),
           str(TINY), "--steps", "600"]
    proc = subprocess.run(cmd, cwd=str(ROOT), env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines() if line.strip()]
    final = max(e["step"] for e in events if e["type"] == "bye")
    assert final == 600
    steps = [e for e in events if e["type"] == "step"]
    # the batch and preds records carry the step finished before their batch: the gaps are
    # the same whichever step they name
    seen = {
        "batch": [e["step"] for e in events if e["type"] == "batch" and e.get("phase") == "train"],
        "preds": [e["step"] for e in events if e["type"] == "preds" and e.get("phase") == "train"],
        "grads": [e["step"] for e in steps if e.get("sampled") and e.get("grad_norm") is not None],
        "update": [e["step"] for e in steps if e.get("update_ratio") is not None],
        # every step's loss travels with a read-back: a step event with a loss = one read-back
        "readback": [e["step"] for e in steps if e.get("loss") is not None],
    }
    for probe, at in seen.items():
        assert len(at) > 600 // 32, (probe, at)
        assert _largest_gap(at) <= 32, (probe, _largest_gap(at), at)
    assert _largest_gap(seen["readback"]) <= 10
    assert max(e["step"] for e in steps) >= final - 10
    # the shim says what it measured, and whether the floor fit in the budget
    ov = [e for e in events if e["type"] == "overhead"]
    last = ov[-1]
    assert last["final"] is True and isinstance(last["over_budget"], bool)
    assert set(last["gaps"]) == set(PROBES) and max(last["gaps"].values()) <= 32
    assert last["gaps"]["grads"] == _largest_gap(seen["grads"])
    bye = [e for e in events if e["type"] == "bye"][-1]
    assert bye["gaps"] == last["gaps"] and bye["over_budget"] == last["over_budget"]


def _costly(s: Sampler, cost: float, step_time: float) -> None:
    for p in PROBES:
        s.cost[p] = cost
    s._adapt(step_time=step_time, base=0.0)


def test_floor_holds_over_budget_and_says_so():
    s = Sampler(budget=0.01, warmup=0, max_interval=32)
    _costly(s, 5e-3, 0.005)                     # 5 ms probes on 5 ms steps: the budget cannot hold
    assert s.interval["readback"] == 8          # every 10 steps at most, as a power of two
    assert all(s.interval[p] == 32 for p in PROBES if p != "readback")
    assert s.over_budget is True
    _costly(s, 1e-6, 0.1)                       # microsecond probes on 100 ms steps: every step
    assert all(v == 1 for v in s.interval.values()) and s.over_budget is False


def test_floor_follows_config_and_rounds_down_to_a_power_of_two():
    s = Sampler(budget=0.01, warmup=0, max_interval=50)
    _costly(s, 1.0, 0.01)
    assert s.interval["grads"] == 32 and s.interval["readback"] == 8
    s = Sampler(budget=0.01, warmup=0, max_interval=4)
    _costly(s, 1.0, 0.01)
    assert s.interval["grads"] == 4 and s.interval["readback"] == 4


def test_schedule_follows_the_step_number():
    a = Sampler(budget=0.01, warmup=20)
    b = Sampler(budget=0.01, warmup=20)
    _costly(a, 2e-3, 0.02)                      # same costs: a loaded and an idle machine
    _costly(b, 2e-4, 0.02)                      # differ in period, not in phase
    pa = a.interval["grads"]
    pb = b.interval["grads"]
    due_a = [k for k in range(21, 400) if a.due("grads", k)]
    due_b = [k for k in range(21, 400) if b.due("grads", k)]
    assert all(k % pa == 0 for k in due_a) and all(k % pb == 0 for k in due_b)
    small, big = sorted((due_a, due_b), key=len)
    assert set(small) <= set(big)                # the sparser schedule is a subset of the denser


def test_gap_is_measured_after_the_dense_start():
    s = Sampler(budget=0.01, warmup=20)
    for k in (1, 2, 3, 10, 20, 28, 60):
        s.mark("batch", k)
    assert s.gaps()["batch"] == 32               # 28 -> 60; 3 -> 10 was in the dense start


def test_costly_probe_is_thinned_in_the_dense_start():
    s = Sampler(budget=0.01, warmup=20)
    s._train_dt = 0.400                          # 400 ms training steps (a 46M model on CPU)
    for _ in range(2):
        s.spend("batch", 0.160)                  # 160 ms per call: 40% of a step
        s.spend("grads", 0.030)                  # 30 ms: 7.5%
    s._dense_periods()
    assert s.dense["batch"] == 4                 # 160 ms / 4 = 10% of a step
    assert s.dense["grads"] == 1
    assert not s.due("batch", 5) and s.due("batch", 8) and s.due("grads", 5)


def test_cheap_probe_keeps_the_dense_start_on_a_tiny_training():
    s = Sampler(budget=0.01, warmup=20)
    s._train_dt = 0.004                          # 4 ms steps, 2 ms probe: 50% of a step,
    for _ in range(2):                           # but 40 ms over the whole dense start
        s.spend("batch", 0.002)
    s._dense_periods()
    assert s.dense["batch"] == 1


def test_forced_readback():
    s = Sampler(budget=0.01, warmup=0)
    s.interval["readback"] = 8
    assert not s.readback_due(3)
    s.request_readback()
    assert s.readback_due(3)
    s.mark("readback", 3)
    assert not s.readback_due(5)
