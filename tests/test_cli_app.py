"""`segwatch run` with a terminal: the supervisor runs as a daemon, the app is only a client.
Detaching the app must leave the training running (and it must end normally later)."""
from __future__ import annotations

import fcntl
import json
import os
import pty
import select
import signal
import struct
import sys
import termios
import time

import pytest

from test_supervisor_fake import alive, meta_of, wait_for, write_fake

pytest.importorskip("textual")


def _spawn_in_pty(args, cwd):
    pid, fd = pty.fork()
    if pid == 0:  # child
        os.chdir(cwd)
        os.environ["TERM"] = "xterm-256color"
        os.environ.pop("NO_COLOR", None)
        os.execv(sys.executable, [sys.executable, "-m", "segwatch", *args])
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 140, 0, 0))
    return pid, fd


def _read_until(fd, pid, deadline, pred=None):
    buf = b""
    while time.monotonic() < deadline:
        r, _, _ = select.select([fd], [], [], 0.1)
        if r:
            try:
                data = os.read(fd, 65536)
            except OSError:
                data = b""
            if not data:  # the terminal closed: the process is ending
                while time.monotonic() < deadline:
                    done, status = os.waitpid(pid, os.WNOHANG)
                    if done:
                        return buf, os.waitstatus_to_exitcode(status)
                    time.sleep(0.05)
                break
            buf += data
            if pred and pred(buf):
                return buf, None
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return buf, os.waitstatus_to_exitcode(status)
    return buf, None


@pytest.mark.slow
def test_detaching_the_app_leaves_the_training_running(tmp_path):
    fake = write_fake(tmp_path)
    run = tmp_path / "run"
    pid, fd = _spawn_in_pty(["run", "--no-shim", "--run-dir", str(run), str(fake), "slow", "6"], tmp_path)
    code = None
    try:
        wait_for(lambda: meta_of(run).get("status") == "running", timeout=30)
        meta = meta_of(run)
        assert meta["supervisor_pid"] != pid  # the supervisor is a separate daemon
        assert meta["headless"] is False
        # let the app draw, then detach
        _read_until(fd, pid, time.monotonic() + 3)
        os.write(fd, b"d")
        out, code = _read_until(fd, pid, time.monotonic() + 20)
        assert code == 0, out[-2000:]
        assert b"goes on in the background" in out
        # the training and its supervisor are still alive after the app left
        assert meta_of(run)["status"] == "running"
        assert alive(meta["child_pid"]) and alive(meta["supervisor_pid"])
        wait_for(lambda: meta_of(run).get("status") == "finished", timeout=30)
        assert json.loads((run / "report.json").read_text())["exit_code"] == 0
        wait_for(lambda: not alive(meta["supervisor_pid"]), timeout=10)
    finally:
        if code is None:
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except OSError:
                pass
        os.close(fd)
        m = meta_of(run)
        for key in ("child_pid", "supervisor_pid"):
            if m.get(key) and alive(m[key]) and m.get("status") not in ("finished",):
                os.kill(m[key], signal.SIGTERM)


BLOCK_TUI = '''
import sys
class _Block:
    def find_spec(self, name, path=None, target=None):
        if name == "segwatch.tui.app":
            raise ImportError("blocked for the test")
        return None
sys.meta_path.insert(0, _Block())
'''


def test_without_the_app_a_terminal_run_falls_back_to_headless(tmp_path):
    fake = write_fake(tmp_path)
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCK_TUI)
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = str(site) + (os.pathsep + old if old else "")
    try:
        pid, fd = _spawn_in_pty(["run", "--no-shim", "--run-dir", str(tmp_path / "run"), str(fake), "normal", "0"],
                                tmp_path)
    finally:
        if old is None:
            os.environ.pop("PYTHONPATH")
        else:
            os.environ["PYTHONPATH"] = old
    try:
        out, code = _read_until(fd, pid, time.monotonic() + 30)
    finally:
        os.close(fd)
    assert code == 0, out[-2000:]
    assert b"the app is not available" in out and b"running headless" in out
    assert b"step 1 loss" in out
    assert meta_of(tmp_path / "run")["headless"] is True


@pytest.mark.slow
def test_closing_the_terminal_leaves_the_training_running(tmp_path):
    """The terminal goes away (SSH dropped, window closed): the app gets SIGHUP and dies, the
    supervisor daemon (its own session) and the training go on to a normal end."""
    fake = write_fake(tmp_path)
    run = tmp_path / "run"
    pid, fd = _spawn_in_pty(["run", "--no-shim", "--run-dir", str(run), str(fake), "slow", "5"], tmp_path)
    closed = False
    try:
        wait_for(lambda: meta_of(run).get("status") == "running", timeout=30)
        meta = meta_of(run)
        _read_until(fd, pid, time.monotonic() + 2)
        os.close(fd)                     # hang up the terminal
        closed = True
        deadline = time.monotonic() + 15
        status = None
        while time.monotonic() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            time.sleep(0.05)
        assert status is not None and done, "the app survived its terminal"
        pid = None
        assert alive(meta["child_pid"]) and alive(meta["supervisor_pid"])
        assert meta_of(run)["status"] == "running"
        wait_for(lambda: meta_of(run).get("status") == "finished", timeout=30)
        rep = json.loads((run / "report.json").read_text())
        assert rep["exit_code"] == 0 and rep["steps"] > 50
    finally:
        if pid is not None:
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except OSError:
                pass
        if not closed:
            os.close(fd)
