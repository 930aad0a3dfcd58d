"""Pause / resume / kill from the app against a REAL child: ``segwatch run --headless``
supervises a tiny script in a temp run dir; the app attaches with ``RunClient(run_dir)``
and the keys must stop, continue and end the child process (checked with psutil)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from segwatch.supervisor.client import RunClient
from segwatch.tui import SegwatchApp
from segwatch.tui.app import ConfirmKill

pytestmark = pytest.mark.slow

SCRIPT = """\
import time
for i in range(1200):
    print("tick", i, flush=True)
    time.sleep(0.05)
"""


def _wait(cond, timeout=30.0, every=0.05):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            if cond():
                return True
        except (psutil.Error, OSError, ValueError):
            pass
        time.sleep(every)
    return False


@pytest.fixture
def live_run(tmp_path):
    script = tmp_path / "tiny.py"
    script.write_text(SCRIPT)
    run_dir = tmp_path / "run"
    sup = subprocess.Popen(
        [sys.executable, "-m", "segwatch", "run", "--headless", "--run-dir", str(run_dir), str(script)],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    meta_path = run_dir / "meta.json"

    def child_ready():
        meta = json.loads(meta_path.read_text())
        return meta.get("child_pid") and meta.get("status") == "running" and os.path.exists(meta["socket"])

    try:
        assert _wait(child_ready, 60), "the supervisor did not start the child"
        meta = json.loads(meta_path.read_text())
        yield run_dir, int(meta["child_pid"]), sup
    finally:
        if sup.poll() is None:
            os.killpg(sup.pid, signal.SIGKILL)
        sup.wait(10)


def _stopped(pid: int) -> bool:
    return psutil.Process(pid).status() == psutil.STATUS_STOPPED


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


async def _pwait(pilot, cond, timeout=20.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            if cond():
                return True
        except (psutil.Error, OSError):
            pass
        await pilot.pause(0.1)
    return cond()


async def test_pause_resume_kill_real_child(live_run):
    run_dir, child, sup = live_run
    client = RunClient(str(run_dir))
    app = SegwatchApp(client=client, live=True)
    try:
        async with app.run_test(size=(100, 32)) as pilot:
            assert await _pwait(pilot, lambda: app.state.status == "running" and app.view.output_total > 0)
            await pilot.press("p")
            assert await _pwait(pilot, lambda: _stopped(child)), "p did not stop the child"
            assert await _pwait(pilot, lambda: app.state.status == "paused")
            await pilot.press("r")
            assert await _pwait(pilot, lambda: not _stopped(child)), "r did not resume the child"
            assert await _pwait(pilot, lambda: app.state.status == "running")
            await pilot.press("k")
            await pilot.pause()
            assert isinstance(app.screen, ConfirmKill)
            await pilot.press("y")
            assert await _pwait(pilot, lambda: _gone(child)), "k + y did not end the child"
            assert await _pwait(pilot, lambda: app.state.status in ("killed", "failed", "finished"))
            await pilot.press("d")
    finally:
        client.close()
    assert app.return_value == "detached"
    assert sup.wait(20) is not None


async def test_detach_leaves_the_run_going(live_run):
    run_dir, child, sup = live_run
    client = RunClient(str(run_dir))
    app = SegwatchApp(client=client, live=True)
    try:
        async with app.run_test(size=(100, 32)) as pilot:
            assert await _pwait(pilot, lambda: app.view.output_total > 0)
            await pilot.press("q")
            await pilot.pause()
    finally:
        client.close()
    assert app.return_value == "detached"
    time.sleep(0.3)
    assert psutil.pid_exists(child) and not _gone(child) and not _stopped(child)
    assert sup.poll() is None
