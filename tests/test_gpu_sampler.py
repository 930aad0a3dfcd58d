"""NVML sampling (issue 19) with a fake NVML module: per-GPU fields, this tree's processes
only, and nothing at all without NVML."""
from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent / "gpu_fake"))

import fake_nvml  # noqa: E402

from segwatch.supervisor.gpu import NVML_MODULE_ENV, NvmlSampler, load_nvml  # noqa: E402


def test_fake_nvml_sample_fields_and_tree_processes(monkeypatch):
    monkeypatch.setenv("SEGWATCH_FAKE_NVML_GPUS", "2")
    s = NvmlSampler(nvml=fake_nvml)
    assert s.available and s.count == 2
    child = fake_nvml._tree_pids()   # none in a plain test process: give it one pid to own
    out = s.sample([12345, *child])
    d0, d1 = out["devices"]
    assert d0["name"] == "Fake GPU H100" and d0["util"] == 87 and d0["temp"] == 71
    assert d0["mem_used"] == 12 * fake_nvml.GIB and d0["mem_total"] == 80 * fake_nvml.GIB
    assert d0["power_w"] == 312.5 and d0["power_limit_w"] == 700.0
    # the stranger pid 999999 on GPU 0 is not ours
    assert all(p["pid"] != 999999 for p in d0["procs"])
    assert d1["procs"] == [] and d1["util"] == 3


def test_sampler_keeps_only_our_pids(monkeypatch):
    procs = [SimpleNamespace(pid=10, usedGpuMemory=5), SimpleNamespace(pid=11, usedGpuMemory=None)]
    nv = SimpleNamespace(nvmlInit=lambda: None, nvmlDeviceGetCount=lambda: 1,
                         nvmlDeviceGetHandleByIndex=lambda i: i,
                         nvmlDeviceGetComputeRunningProcesses=lambda h: procs)
    out = NvmlSampler(nvml=nv).sample([11, 12])
    dev = out["devices"][0]
    assert dev["procs"] == [{"pid": 11, "mem": None}]
    # calls the module lacks leave their fields null instead of failing the sample
    assert dev["util"] is None and dev["temp"] is None and dev["power_w"] is None


def test_no_nvml_or_no_device_is_unavailable(monkeypatch):
    monkeypatch.setenv(NVML_MODULE_ENV, "segwatch_no_such_nvml_module")
    mod, why = load_nvml()
    assert mod is None and "not importable" in why
    s = NvmlSampler()
    assert not s.available and s.sample([1]) is None
    monkeypatch.setenv("SEGWATCH_FAKE_NVML_GPUS", "0")
    s = NvmlSampler(nvml=fake_nvml)
    assert not s.available and s.reason == "no NVIDIA GPU visible" and s.sample([1]) is None

    def broken_init():
        raise RuntimeError("driver not loaded")
    s = NvmlSampler(nvml=SimpleNamespace(nvmlInit=broken_init))
    assert not s.available and "init failed" in s.reason


def test_env_names_the_module(monkeypatch):
    monkeypatch.setenv(NVML_MODULE_ENV, "fake_nvml")
    monkeypatch.setenv("SEGWATCH_FAKE_NVML_GPUS", "1")
    assert NvmlSampler().count == 1
