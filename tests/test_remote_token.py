"""`--listen`: TCP on loopback with a random token. A wrong or missing token cannot pause,
resume, kill or read; the run directory, meta.json (which holds the token) and the Unix
socket are owner-only."""
from __future__ import annotations

import io
import json
import os
import socket
import stat
import subprocess
import threading
import time

import psutil
import pytest

from segwatch.protocol import LineDecoder, encode, make_event
from segwatch.supervisor import ControlError, RunClient, Supervisor

from test_supervisor_fake import meta_of, read_events, segwatch_cmd, wait_for, write_fake


def _tcp_exchange(port: int, lines: list[bytes], n_acks: int) -> list[dict]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"".join(lines))
        dec = LineDecoder()
        got: list[dict] = []
        while len([e for e in got if e["type"] == "ack"]) < n_acks:
            data = s.recv(65536)
            if not data:
                break
            got.extend(dec.feed(data))
        # nothing else comes: no events for a connection without the token
        s.settimeout(0.5)
        try:
            while True:
                data = s.recv(65536)
                if not data:
                    break
                got.extend(dec.feed(data))
        except socket.timeout:
            pass
    return got


@pytest.mark.slow
def test_wrong_or_missing_token_cannot_control_or_read(tmp_path):
    fake = write_fake(tmp_path)
    run = tmp_path / "run"
    done = tmp_path / "done"    # the training lives until the test ends it, however loaded the machine
    sup = Supervisor(str(fake), ["until", str(done)], run_dir=run, use_shim=False, out=io.BytesIO(), err=io.BytesIO(),
                     install_signals=False, listen="127.0.0.1:0", kill_timeout=2.0)
    th = threading.Thread(target=sup.run)
    th.start()
    try:
        wait_for(lambda: meta_of(run).get("status") == "running")
        meta = meta_of(run)
        # owner-only: the run dir, meta.json (it holds the token), the socket, every file
        assert stat.S_IMODE(os.stat(run).st_mode) == 0o700
        assert stat.S_IMODE(os.stat(run / "meta.json").st_mode) == 0o600
        sock_st = os.stat(meta["socket"])
        assert stat.S_ISSOCK(sock_st.st_mode) and stat.S_IMODE(sock_st.st_mode) == 0o600
        for f in run.iterdir():
            if f.is_file():
                assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
        host, port = meta["tcp"].rsplit(":", 1)
        port = int(port)
        assert host == "127.0.0.1" and len(meta["token"]) >= 32
        child = psutil.Process(meta["child_pid"])
        bad_tokens = [None, "", "wrong", meta["token"][:-1], meta["token"] + "x", meta["token"].upper(), 12345,
                      [meta["token"]], {"token": meta["token"]}]
        lines = []
        for tok in bad_tokens:
            for cmd in ("pause", "kill", "resume", "subscribe", "ping"):
                fields = {"cmd": cmd} if tok is None else {"cmd": cmd, "token": tok}
                lines.append(encode(make_event("control", **fields)))
        got = _tcp_exchange(port, lines, len(lines))
        acks = [e for e in got if e["type"] == "ack"]
        assert len(acks) == len(lines) and not any(a["ok"] for a in acks)
        assert {a["error"] for a in acks} == {"bad or missing token"}
        assert [e for e in got if e["type"] != "ack"] == []      # and nothing of the run was sent
        # the training was never touched
        time.sleep(0.3)
        assert child.is_running() and child.status() != psutil.STATUS_STOPPED
        assert meta_of(run)["status"] == "running"
        assert not [e for e in read_events(run) if e["type"] == "action"]
        with pytest.raises(ControlError):
            RunClient(f"tcp://127.0.0.1:{port}", token="wrong")
        # the right token: pause really stops the tree, resume restarts it
        client = RunClient(f"tcp://127.0.0.1:{port}", token=meta["token"])
        assert client.control("pause")["ok"]
        wait_for(lambda: child.status() == psutil.STATUS_STOPPED, timeout=5)
        assert client.control("resume")["ok"]
        wait_for(lambda: child.status() != psutil.STATUS_STOPPED, timeout=5)
        client.close()
    finally:
        done.touch()
        th.join(timeout=30)
    rep = json.loads((run / "report.json").read_text())
    assert rep["exit_code"] == 0 and rep["status"] == "finished"
    assert rep["supervisor"]["protocol"]["unauthorized"] == len(bad_tokens) * 5 + 1
    assert [(a["kind"], a["by"]) for a in rep["actions"]] == [("pause", "user"), ("resume", "user")]


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")
def test_another_user_cannot_reach_the_socket_or_read_the_token(tmp_path):
    fake = write_fake(tmp_path)
    os.chmod(tmp_path, 0o755)   # tmp_path itself open: only the run dir's own modes protect the run
    run = tmp_path / "run"
    done = tmp_path / "done"    # the training lives until the test ends it, however loaded the machine
    sup = Supervisor(str(fake), ["until", str(done)], run_dir=run, use_shim=False, out=io.BytesIO(), err=io.BytesIO(),
                     install_signals=False, listen="127.0.0.1:0")
    th = threading.Thread(target=sup.run)
    th.start()
    try:
        wait_for(lambda: meta_of(run).get("status") == "running")
        meta = meta_of(run)
        # a process of another user (fork + setuid: our interpreter may not be readable by it)
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child
            code = 0
            try:
                os.setgroups([])
                os.setgid(65534)
                os.setuid(65534)
                try:
                    os.open(str(run / "meta.json"), os.O_RDONLY)
                    code |= 1
                except PermissionError:
                    pass
                except OSError:
                    code |= 4
                try:
                    s = socket.socket(socket.AF_UNIX)
                    s.connect(meta["socket"])
                    code |= 2
                except PermissionError:
                    pass
                except OSError:
                    code |= 8
            except BaseException:
                code = 64
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0   # both refused with EACCES
    finally:
        done.touch()
        th.join(timeout=30)


@pytest.mark.slow
def test_listen_elsewhere_than_loopback_needs_allow_remote(tmp_path):
    fake = write_fake(tmp_path)
    r = subprocess.run(segwatch_cmd("run", "--no-shim", "--listen", "0.0.0.0:0", "--run-dir", str(tmp_path / "r"),
                                    str(fake), "normal", "0"), capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "--allow-remote" in r.stderr and not (tmp_path / "r").exists()
    r = subprocess.run(segwatch_cmd("run", "--no-shim", "--listen", "0.0.0.0:0", "--allow-remote", "--run-dir",
                                    str(tmp_path / "r2"), str(fake), "normal", "0"),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    meta = meta_of(tmp_path / "r2")
    assert meta["tcp"].startswith("0.0.0.0:") and meta["token"]
