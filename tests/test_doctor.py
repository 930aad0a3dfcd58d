"""``segwatch doctor`` and ``segwatch run``'s warning about a torchvision that cannot import.

The broken torchvision is faked, nothing is installed: a directory on PYTHONPATH holds a
``torchvision`` package whose import raises what the CUDA build raises beside a CPU torch,
and its ``dist-info`` (version 0.28.0, ``Requires-Dist: torch==2.13.0``).
"""
from __future__ import annotations

import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from segwatch import doctor

ROOT = Path(__file__).resolve().parent.parent
TORCH = metadata.version("torch")
CPU_TORCH = TORCH.split("+")[-1].startswith("cpu") if "+" in TORCH else False


def test_torchvision_mismatch_from_versions():
    cuda_beside_cpu = doctor.torchvision_mismatch("2.13.0+cpu", "0.28.0", ["torch==2.13.0"])
    assert cuda_beside_cpu and doctor.NMS_MISSING in cuda_beside_cpu and "CUDA build" in cuda_beside_cpu
    assert doctor.torchvision_mismatch("2.13.0+cpu", "0.28.0+cpu", ["torch==2.13.0"]) is None
    assert doctor.torchvision_mismatch("2.13.0+cu128", "0.28.0+cu128") is None
    assert "another torch" in doctor.torchvision_mismatch("2.13.0", "0.27.1")
    assert "requires torch==2.12.0" in doctor.torchvision_mismatch("2.13.0", "0.28.0", ["torch==2.12.0"])
    assert doctor.torchvision_mismatch(None, "0.28.0") is None


def test_matching_torchvision_build():
    assert doctor.matching_torchvision("2.13.0+cpu") == \
        "torchvision==0.28.0 --index-url https://download.pytorch.org/whl/cpu"
    assert doctor.matching_torchvision("2.13.1+cu128").endswith("whl/cu128")
    assert doctor.matching_torchvision("2.5.1").startswith("torchvision==0.20.1")


def test_terminal_colours(monkeypatch):
    monkeypatch.setenv("TERM", "xterm-256color")
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("COLORTERM", "truecolor")
    assert doctor.terminal_info()["colours"] == "truecolor"
    monkeypatch.delenv("COLORTERM")
    assert doctor.terminal_info()["colours"] == "256"
    monkeypatch.setenv("NO_COLOR", "1")
    assert doctor.terminal_info()["colours"].startswith("none")


@pytest.fixture
def broken_torchvision(tmp_path):
    fake = tmp_path / "fake_site"
    (fake / "torchvision").mkdir(parents=True)
    (fake / "torchvision" / "__init__.py").write_text(
        'raise RuntimeError("operator torchvision::nms does not exist")\n')
    info = fake / "torchvision-0.28.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: torchvision\nVersion: 0.28.0\n"
                                   "Requires-Dist: torch==2.13.0\n")
    env = os.environ.copy()
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(fake), env.get("PYTHONPATH")) if p)
    for k in ("SEGWATCH_RUN_DIR", "SEGWATCH_SOCKET"):
        env.pop(k, None)
    return env


@pytest.mark.timeout(240)
@pytest.mark.slow
def test_doctor_names_the_broken_torchvision_and_the_matching_build(broken_torchvision):
    proc = subprocess.run([sys.executable, "-m", "segwatch", "doctor", "--frameworks", "torchvision,mmengine"],
                          cwd=str(ROOT), capture_output=True, text=True, timeout=220, env=broken_torchvision)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    assert f"torch {metadata.version('torch')}" in out
    assert "CANNOT IMPORT: RuntimeError: operator torchvision::nms does not exist" in out, out
    assert "matching build: pip install torchvision==" in out, out
    if CPU_TORCH and TORCH.startswith("2.13."):
        assert "why: torchvision 0.28.0 is a CUDA build" in out, out
        assert "torchvision==0.28.0 --index-url https://download.pytorch.org/whl/cpu" in out
    assert "textual " in out and "terminal: " in out and "ssh: " in out
    armed = out.split("adapters that would arm (adapter: auto): ")[1]
    assert "dformer" in armed
    try:
        metadata.version("mmengine")
        assert "mmseg (mmengine " in armed and "mmengine                     " in out
    except metadata.PackageNotFoundError:
        assert "mmseg" not in armed


@pytest.mark.timeout(240)
@pytest.mark.slow
def test_doctor_json_lists_frameworks_and_ssh():
    import json
    proc = subprocess.run([sys.executable, "-m", "segwatch", "doctor", "--json", "--frameworks", "mmengine"],
                          cwd=str(ROOT), capture_output=True, text=True, timeout=220)
    assert proc.returncode == 0, proc.stderr[-2000:]
    d = json.loads(proc.stdout)
    assert d["torch"]["version"] == __import__("torch").__version__
    assert set(d["frameworks"]) <= {"mmengine"}
    assert set(d["ssh"]) == {"ssh", "sshd"}
    assert d["textual"] == metadata.version("textual")


@pytest.mark.timeout(120)
def test_run_warns_in_one_line_about_the_broken_torchvision(broken_torchvision, tmp_path):
    script = tmp_path / "hello.py"
    script.write_text("print('trained')\n")
    proc = subprocess.run([sys.executable, "-m", "segwatch", "run", "--headless", "--no-shim",
                           "--run-dir", str(tmp_path / "run"), str(script)],
                          cwd=str(ROOT), capture_output=True, text=True, timeout=100, env=broken_torchvision)
    assert proc.returncode == 0, proc.stderr[-2000:]
    warnings = [ln for ln in proc.stderr.splitlines() if ln.startswith("[segwatch] warning:")]
    if CPU_TORCH and TORCH.startswith("2.13."):
        assert len(warnings) == 1, proc.stderr
        assert "torchvision 0.28.0" in warnings[0] and "pip install torchvision==0.28.0" in warnings[0]
    assert "trained" in proc.stdout


@pytest.mark.timeout(120)
def test_run_does_not_warn_without_torchvision(tmp_path):
    script = tmp_path / "hello.py"
    script.write_text("print('trained')\n")
    env = os.environ.copy()
    for k in ("SEGWATCH_RUN_DIR", "SEGWATCH_SOCKET"):
        env.pop(k, None)
    proc = subprocess.run([sys.executable, "-m", "segwatch", "run", "--headless", "--no-shim",
                           "--run-dir", str(tmp_path / "run"), str(script)],
                          cwd=str(ROOT), capture_output=True, text=True, timeout=100, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    if doctor.quick_warnings() == []:
        assert "[segwatch] warning:" not in proc.stderr
