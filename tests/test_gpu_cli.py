"""Issue 19 through the real CLI and shim: a training that dies of CUDA OOM (raised on CPU)
is reported as resource.cuda_oom, with the fake NVML's ``gpu`` events in the run store and
the same report on replay; a healthy run without NVML has no ``gpu`` events and none of the
GPU-side findings."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "tests" / "gpu_scripts"
GPU_IDS = {"resource.cuda_oom", "resource.memory_growing", "perf.data_bound"}
pytestmark = pytest.mark.slow


def _run(script: str, tmp: Path, nvml: str) -> tuple[subprocess.CompletedProcess, dict, list[dict]]:
    report, run_dir = tmp / "r.json", tmp / "run"
    env = dict(os.environ, SEGWATCH_NVML_MODULE=nvml, SEGWATCH_FAKE_NVML_GPUS="2",
               PYTHONPATH=os.pathsep.join([str(ROOT / "tests" / "gpu_fake"), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-m", "segwatch", "run", "--headless", "--report", str(report),
                           "--run-dir", str(run_dir), str(SCRIPTS / script)],
                          cwd=str(ROOT), capture_output=True, text=True, timeout=200, env=env)
    assert report.exists(), f"no report; rc={proc.returncode}\n{proc.stderr[-3000:]}"
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines() if line.strip()]
    return proc, json.loads(report.read_text()), events


@pytest.mark.timeout(240)
def test_cuda_oom_run_and_fake_gpu_events(tmp_path):
    proc, rep, events = _run("cuda_oom.py", tmp_path, "fake_nvml")
    assert proc.returncode == 1
    found = {f["id"]: f for f in rep["findings"]}
    oom = found.get("resource.cuda_oom")
    assert oom is not None, sorted(found)
    assert oom["severity"] == "error"
    assert 10 <= oom["first_step"] <= 12   # the last backward before the raise was step 11
    assert oom["evidence"]["batch_size"] == 8 and oom["evidence"]["crop"] == [32, 32]
    assert "CUDA out of memory" in oom["evidence"]["message"]
    assert "AMP" in oom["advice"]
    assert "resource.memory_growing" not in found and "perf.data_bound" not in found

    gpu = [e for e in events if e["type"] == "gpu"]
    assert gpu, "no gpu events with the fake NVML"
    child = json.loads((tmp_path / "run" / "meta.json").read_text())["child_pid"]
    dev0, dev1 = gpu[-1]["devices"]
    assert dev0["util"] == 87 and dev0["mem_total"] == 80 << 30 and dev1["procs"] == []
    pids = {p["pid"] for e in gpu for p in e["devices"][0]["procs"]}
    assert child in pids and 999999 not in pids

    from segwatch.supervisor.replay import Replayed

    again = {f["id"]: f for f in Replayed(tmp_path / "run").report()["findings"]}
    assert again["resource.cuda_oom"]["evidence"] == oom["evidence"]


@pytest.mark.timeout(240)
def test_healthy_run_without_nvml(tmp_path):
    proc, rep, events = _run("healthy_short.py", tmp_path, "segwatch_no_such_nvml_module")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not GPU_IDS & {f["id"] for f in rep["findings"]}
    assert not [e for e in events if e["type"] == "gpu"]
    assert rep["steps"] >= 40


def _shim_sends(events: list[dict], field: str) -> bool:
    return any(e.get(field) is not None for e in events if e["type"] == "step")


@pytest.mark.timeout(240)
def test_slow_dataset_is_data_bound(tmp_path):
    proc, rep, events = _run("slow_loader.py", tmp_path, "segwatch_no_such_nvml_module")
    assert proc.returncode == 0, proc.stderr[-2000:]
    if not _shim_sends(events, "data_wait"):
        pytest.skip("the shim does not send step.data_wait / step.wall yet (issue 19, shim side)")
    found = {f["id"]: f for f in rep["findings"]}
    f = found.get("perf.data_bound")
    assert f is not None, sorted(found)
    # (the share itself depends on the machine's load: compute slows down, sleep does not)
    assert f["evidence"]["data_wait_share"] > f["evidence"]["threshold"] and f["evidence"]["num_workers"] == 0
    assert "resource.memory_growing" not in found and "resource.cuda_oom" not in found


def _cuda() -> bool:
    try:
        import torch
        return torch.cuda.is_available()
    except Exception:
        return False


@pytest.mark.timeout(240)
@pytest.mark.skipif(not _cuda(), reason="needs a CUDA device (CUDA memory is read on the GPU)")
@pytest.mark.parametrize("script,leaks", [("memory_leak.py", True), ("healthy_short.py", False)])
def test_memory_growing_on_cuda(tmp_path, script, leaks):
    proc, rep, events = _run(script, tmp_path, "segwatch_no_such_nvml_module")
    assert proc.returncode == 0, proc.stderr[-2000:]
    if not _shim_sends(events, "cuda_mem"):
        pytest.skip("the shim does not send step.cuda_mem yet (issue 19, shim side)")
    found = {f["id"] for f in rep["findings"]}
    assert ("resource.memory_growing" in found) == leaks, sorted(found)
    assert "perf.data_bound" not in found
