"""End to end in a real terminal: `segwatch run` inside tmux, the screen read with capture-pane.

The app must come up on a live training, tick the checklist and show the finding that the
seeded fault (labels using 255 while the config says -1) raises; `q` detaches without killing.
"""
from __future__ import annotations

import json
import os
import pathlib
import shlex
import shutil
import subprocess
import sys
import time

import psutil
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
FAULTS = ROOT / "tests" / "faults"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed"),
]


def _tmux(sock: str, *args: str, check: bool = True) -> str:
    res = subprocess.run(["tmux", "-L", sock, *args], capture_output=True, text=True, timeout=20)
    if check and res.returncode != 0:
        raise RuntimeError(f"tmux {args}: {res.stderr}")
    return res.stdout


def _screen(sock: str) -> str:
    return _tmux(sock, "capture-pane", "-p", "-t", "sw", check=False)


def _wait_for(sock: str, needles: list[str], timeout: float) -> str:
    deadline = time.monotonic() + timeout
    screen = ""
    while time.monotonic() < deadline:
        screen = _screen(sock)
        if all(n in screen for n in needles):
            return screen
        time.sleep(0.5)
    raise AssertionError(f"{needles} not on screen after {timeout}s:\n{screen}")


def test_live_app_in_tmux_shows_checklist_and_finding(tmp_path):
    sock = f"segwatch-test-{os.getpid()}"
    run_dir = tmp_path / "run"
    cmd = " ".join(
        shlex.quote(a)
        for a in [
            sys.executable, "-m", "segwatch", "run", "--run-dir", str(run_dir),
            "--config", str(FAULTS / "configs" / "sunrgbd37.yaml"), str(FAULTS / "fault_ignore_255.py"),
        ]
    )
    env_cmd = f"cd {shlex.quote(str(tmp_path))} && TERM=xterm-256color {cmd}; sleep 60"
    _tmux(sock, "new-session", "-d", "-s", "sw", "-x", "100", "-y", "32", env_cmd)
    try:
        screen = _wait_for(sock, ["Checklist", "label.ignore_mismatch"], timeout=90)
        # the checklist ticks: the ignore-label item is failed with evidence, others resolved
        assert "ignore label" in screen
        assert "✗" in screen
        # detach: the app exits, the training is not killed by it
        _tmux(sock, "send-keys", "-t", "sw", "q")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and "Checklist" in _screen(sock):
            time.sleep(0.5)
        assert "Checklist" not in _screen(sock), "q did not close the app"
        meta = json.loads((run_dir / "meta.json").read_text())
        # the run goes on (or has already finished on its own) after the viewer left
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            meta = json.loads((run_dir / "meta.json").read_text())
            if meta.get("status") in ("finished", "failed", "killed", "lost"):
                break
            time.sleep(0.5)
        assert meta["status"] == "finished", meta
        report = json.loads((run_dir / "report.json").read_text())
        assert report["exit_code"] == 0
        assert "label.ignore_mismatch" in [f["id"] for f in report["findings"]]
    finally:
        _tmux(sock, "kill-server", check=False)
        try:
            meta = json.loads((run_dir / "meta.json").read_text())
            for key in ("child_pid", "supervisor_pid"):
                pid = meta.get(key)
                if pid and psutil.pid_exists(pid):
                    psutil.Process(pid).kill()
        except (OSError, ValueError, psutil.Error):
            pass
