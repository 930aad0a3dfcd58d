"""Viewers away from the run directory: TCP on loopback with a token, SSH through `segwatch
relay` (with a stand-in `ssh` that runs the remote command locally), and the daemon entry
point that `segwatch run` starts when it opens the app."""
from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from segwatch.supervisor import ControlError, RunClient, RunStore, Supervisor

from test_supervisor_fake import meta_of, wait_for, write_fake


def _start(tmp_path, *args, **kw):
    fake = write_fake(tmp_path)
    sup = Supervisor(str(fake), list(args), run_dir=tmp_path / "run", use_shim=False, out=io.BytesIO(),
                     err=io.BytesIO(), install_signals=False, **kw)
    th = threading.Thread(target=sup.run)
    th.start()
    wait_for(lambda: meta_of(tmp_path / "run").get("status") == "running")
    return sup, th, tmp_path / "run"


def test_tcp_loopback_with_token(tmp_path):
    sup, th, run = _start(tmp_path, "slow", "1.5", listen="127.0.0.1:0")
    try:
        meta = meta_of(run)
        host, port = meta["tcp"].rsplit(":", 1)
        assert host == "127.0.0.1" and meta["token"]
        with pytest.raises(ControlError):
            RunClient(f"tcp://127.0.0.1:{port}", token="wrong")
        with pytest.raises(ValueError):
            RunClient(f"tcp://127.0.0.1:{port}")
        client = RunClient(f"tcp://127.0.0.1:{port}?token={meta['token']}")
        ack = client.control("ping")
        assert ack["ok"] and ack["status"] == "running"
        got = list(client.events(follow=True))
        client.close()
    finally:
        th.join(timeout=20)
    assert got == list(RunStore(run, create=False).events())
    assert got[-1]["status"] == "finished"


@pytest.mark.slow
def test_tcp_subscriber_catching_up_on_a_large_history(tmp_path):
    import socket

    from segwatch.protocol import LineDecoder, encode, make_event

    sup, th, run = _start(tmp_path, "flood", "30000", listen="127.0.0.1:0")
    try:
        wait_for(lambda: "flooded" in (run / "stdout.log").read_text() if (run / "stdout.log").exists() else False)
        meta = meta_of(run)
        port = int(meta["tcp"].rsplit(":", 1)[1])
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(encode(make_event("control", cmd="subscribe", token=meta["token"])))
        dec = LineDecoder()
        got = []
        time.sleep(0.5)  # a slow reader: the supervisor must not spin or drop it
        while True:
            data = s.recv(1 << 16)
            if not data:
                break
            got.extend(dec.feed(data))
        s.close()
    finally:
        th.join(timeout=30)
    events = [e for e in got if e["type"] != "ack"]
    assert events == list(RunStore(run, create=False).events())
    assert sum(e["type"] == "step" for e in events) == 30020
    assert dec.invalid == 0


def test_listen_refuses_non_loopback(tmp_path):
    fake = write_fake(tmp_path)
    sup = Supervisor(str(fake), ["normal", "0"], run_dir=tmp_path / "run", use_shim=False, out=io.BytesIO(),
                     err=io.BytesIO(), install_signals=False, listen="0.0.0.0:0")
    sup.run()  # the error is reported and the run ends without launching
    assert sup.child is None
    assert "loopback" in json.loads((tmp_path / "run" / "report.json").read_text())["supervisor"]["internal_error"]


FAKE_SSH = """#!/bin/sh
# stand-in for ssh: drop the options and the host, run the remote command here
while [ $# -gt 0 ]; do
  case "$1" in
    -o|-p) shift 2 ;;
    -*) shift ;;
    *) shift; break ;;
  esac
done
exec sh -c "$*"
"""


@pytest.mark.slow
def test_ssh_target_through_relay(tmp_path, monkeypatch):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    ssh = bindir / "ssh"
    ssh.write_text(FAKE_SSH)
    ssh.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("SEGWATCH_REMOTE", f"{sys.executable} -m segwatch")
    sup, th, run = _start(tmp_path, "slow", "2.0")
    try:
        client = RunClient(f"ssh://me@somehost{run}")
        assert client.kind == "ssh"
        ack = client.control("ping", timeout=15)
        assert ack["ok"] and ack["cmd"] == "ping"
        got = list(client.events(follow=True))
        client.close()
    finally:
        th.join(timeout=20)
    assert got == list(RunStore(run, create=False).events())


@pytest.mark.slow
def test_daemon_entry_point(tmp_path):
    fake = write_fake(tmp_path)
    run = tmp_path / "run"
    spec = {"script": str(fake), "script_args": ["normal", "5"], "run_dir": str(run), "use_shim": False,
            "interval": 1}
    log = open(tmp_path / "daemon.log", "wb")
    p = subprocess.Popen([sys.executable, "-m", "segwatch.supervisor", json.dumps(spec)],
                         stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
    assert p.wait(timeout=30) == 5
    meta = meta_of(run)
    assert meta["status"] == "failed" and meta["exit_code"] == 5 and meta["headless"] is False
    assert json.loads((run / "report.json").read_text())["exit_code"] == 5
    assert b"step 1 loss" not in (tmp_path / "daemon.log").read_bytes()  # a daemon does not echo
    assert (run / "stdout.log").read_text().startswith("step 1 loss")
