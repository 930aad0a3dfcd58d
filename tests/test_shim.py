"""The shim on real tiny trainings: ``python -m segwatch.shim tests/shim_scripts/train_tiny.py``.

No socket: events land in ``RUN_DIR/events.shim.jsonl`` and are read back with
``segwatch.protocol.read_events``.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from segwatch.protocol import as_float, read_events

HERE = Path(__file__).parent
SCRIPTS = HERE / "shim_scripts"
TINY = SCRIPTS / "train_tiny.py"
ROOT = HERE.parent


def run_shim(tmp_path: Path, script: Path, *args: str, config: dict | None = None,
             env: dict | None = None, timeout: float = 120) -> tuple[subprocess.CompletedProcess, list[dict]]:
    run_dir = tmp_path / "run"
    e = dict(os.environ)
    for k in ("SEGWATCH_SOCKET", "SEGWATCH_CONFIG", "SEGWATCH_DEBUG", "SEGWATCH_FAULT_INJECT"):
        e.pop(k, None)
    e["SEGWATCH_RUN_DIR"] = str(run_dir)
    e["OMP_NUM_THREADS"] = "1"
    if config is not None:
        e["SEGWATCH_CONFIG"] = json.dumps(config)
    e.update(env or {})
    proc = subprocess.run([sys.executable, "-m", "segwatch.shim", str(script), *args], cwd=str(ROOT),
                          env=e, capture_output=True, text=True, timeout=timeout)
    path = run_dir / "events.shim.jsonl"
    events = list(read_events(path.open("rb"))) if path.exists() else []
    return proc, events


def cfg(C: int, ignore=255) -> dict:
    return {"dataset": {"num_classes": C, "ignore_index": ignore, "class_names": None},
            "sampling": {"overhead_budget": 0.01}}


def of(events, type_):
    return [e for e in events if e["type"] == type_]


def test_hello_first_bye_last_and_steps(tmp_path):
    proc, ev = run_shim(tmp_path, TINY, "--steps", "12", config=cfg(5))
    assert proc.returncode == 0, proc.stderr
    assert ev[0]["type"] == "hello" and ev[-1]["type"] == "bye"
    assert ev[0]["pid"] > 0 and ev[0]["config"]["dataset"]["num_classes"] == 5
    bye = ev[-1]
    assert bye["step"] == 12 and bye["dropped"] == 0 and bye["disabled"] == []
    steps = of(ev, "step")
    assert steps, "no step events"
    assert max(e["step"] for e in steps) == 12
    last = max(steps, key=lambda e: e["step"])
    assert last["backward_total"] == 12 and last["optimizer_steps_total"] == 12
    # the first steps are sampled densely, with a gradient norm
    s1 = [e for e in steps if e["step"] == 1][0]
    assert s1["grad_norm"] is not None and s1["grad_norm"] > 0
    assert s1["with_grad"] > 0 and s1["lr"] == [0.1]
    m = of(ev, "model")
    assert len(m) == 1 and m[0]["cls"] == "Net" and m[0]["out_channels"] == 5 and m[0]["site"] == "root"
    preds = of(ev, "preds")
    assert preds and preds[0]["phase"] == "train" and len(preds[0]["hist"]) == 5
    assert preds[0]["gt_hist"] is not None and preds[0]["valid"] == 2 * 32 * 32
    batches = of(ev, "batch")
    assert batches[0]["phase"] == "train" and batches[0]["labels"]["hist"] is not None
    assert sum(batches[0]["labels"]["hist"]) == batches[0]["labels"]["total"]


def test_exit_code_propagates(tmp_path):
    proc, ev = run_shim(tmp_path, TINY, "--steps", "2", "--exit", "3", config=cfg(5))
    assert proc.returncode == 3
    assert ev[-1]["type"] == "bye"


def test_exception_propagates_with_script_traceback(tmp_path):
    proc, ev = run_shim(tmp_path, TINY, "--steps", "2", "--raise-at-end", config=cfg(5))
    assert proc.returncode == 1
    assert "ValueError: boom at the end" in proc.stderr
    assert "train_tiny.py" in proc.stderr and "runpy" not in proc.stderr
    assert ev[-1]["type"] == "bye" and "ValueError" in ev[-1]["reason"]


def test_script_sees_argv_name_and_path(tmp_path):
    info = tmp_path / "info.json"
    proc, _ = run_shim(tmp_path, TINY, "--steps", "1", "--info-out", str(info))
    assert proc.returncode == 0, proc.stderr
    got = json.loads(info.read_text())
    assert got["name"] == "__main__"
    assert got["argv"] == [str(TINY), "--steps", "1", "--info-out", str(info)]
    assert got["path0"] == str(SCRIPTS)
