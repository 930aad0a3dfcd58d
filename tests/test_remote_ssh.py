"""`attach ssh://...` against a real sshd on loopback (Debian's openssh-server), started by
the test with its own host key, config and authorized key. Skipped only when sshd cannot be
started (not installed, or it cannot bind), with the reason."""
from __future__ import annotations

import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import psutil
import pytest

from segwatch.supervisor import RunClient, RunStore, Supervisor

from test_supervisor_fake import meta_of, read_events, segwatch_cmd, wait_for, write_fake

SSHD = "/usr/sbin/sshd"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def sshd(tmp_path):
    """A private sshd on 127.0.0.1:PORT that lets this user in with a fresh key; yields
    (port, the ssh options that go with it)."""
    keygen = shutil.which("ssh-keygen")
    if not os.path.exists(SSHD) or keygen is None or shutil.which("ssh") is None:
        pytest.skip(f"sshd cannot start: {SSHD}, ssh or ssh-keygen is not installed (Debian: openssh-server)")
    d = tmp_path / "sshd"
    d.mkdir(mode=0o700)
    for args in (["-t", "ed25519", "-N", "", "-q", "-f", str(d / "host_key")],
                 ["-t", "ed25519", "-N", "", "-q", "-f", str(d / "client_key")]):
        subprocess.run([keygen, *args], check=True, capture_output=True, timeout=30)
    (d / "authorized_keys").write_text((d / "client_key.pub").read_text())
    os.chmod(d / "authorized_keys", 0o600)
    if os.geteuid() == 0 and not os.path.isdir("/run/sshd"):
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)   # sshd's privilege separation directory
    user = psutil.Process().username()
    proc = log = None
    port = 0
    for _attempt in range(3):
        port = _free_port()
        (d / "sshd_config").write_text(
            f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d / 'host_key'}\nPidFile {d / 'sshd.pid'}\n"
            f"AuthorizedKeysFile {d / 'authorized_keys'}\nStrictModes no\nUsePAM no\nPermitRootLogin yes\n"
            "PubkeyAuthentication yes\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
            f"AllowUsers {user}\nLogLevel ERROR\n")
        log = open(d / "sshd.log", "wb")
        proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(d / "sshd_config")], stdout=log, stderr=log,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 10
        up = False
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                up = True
                break
            except OSError:
                time.sleep(0.05)
        if up:
            break
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc = None
    if proc is None:
        why = (d / "sshd.log").read_text(errors="replace").strip()[-500:]
        pytest.skip(f"sshd cannot start on 127.0.0.1: {why or 'it exited'}")
    opts = (f"-i {d / 'client_key'} -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null "
            "-o LogLevel=ERROR -o ConnectTimeout=10")
    try:
        # login works (a refusal here is a failure, not a skip: sshd did start)
        r = subprocess.run(["ssh", *opts.split(), "-o", "BatchMode=yes", "-p", str(port), f"{user}@127.0.0.1", "true"],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, f"ssh login refused: {r.stderr}\nsshd: {(d / 'sshd.log').read_text()[-2000:]}"
        yield port, opts, user
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _start(tmp_path, *args):
    fake = write_fake(tmp_path)
    sup = Supervisor(str(fake), list(args), run_dir=tmp_path / "run", use_shim=False, out=io.BytesIO(),
                     err=io.BytesIO(), install_signals=False)
    th = threading.Thread(target=sup.run)
    th.start()
    wait_for(lambda: meta_of(tmp_path / "run").get("status") == "running")
    return sup, th, tmp_path / "run"


@pytest.mark.slow
def test_attach_over_real_ssh_history_live_and_control(sshd, tmp_path, monkeypatch):
    port, opts, user = sshd
    monkeypatch.setenv("SEGWATCH_SSH_OPTS", opts)
    monkeypatch.setenv("SEGWATCH_REMOTE", f"{sys.executable} -m segwatch")
    # the run lives until the test says so: on a loaded machine a fixed duration could end it
    # before the pause is sent
    done = tmp_path / "done"
    sup, th, run = _start(tmp_path, "until", str(done))
    client = None
    try:
        wait_for(lambda: sum(e["type"] == "step" for e in read_events(run)) >= 5)
        history = read_events(run)                      # what was stored before we attached
        client = RunClient(f"ssh://{user}@127.0.0.1:{port}{run}")
        assert client.kind == "ssh"
        got: list[dict] = []
        wait_for(lambda: got.extend(client.poll()) or len(got) >= len(history), timeout=20)
        assert got[: len(history)] == history          # the full history first ...
        # ... a control command through ssh -> relay -> the run's socket
        ack = client.control("pause", timeout=20)
        assert ack["ok"] and ack["cmd"] == "pause" and ack["status"] == "paused"
        child = psutil.Process(meta_of(run)["child_pid"])
        wait_for(lambda: child.status() == psutil.STATUS_STOPPED, timeout=5)
        assert client.control("resume", timeout=20)["ok"]
        wait_for(lambda: child.status() != psutil.STATUS_STOPPED, timeout=5)
        done.touch()
        got.extend(client.events(follow=True))        # ... then live, to the end
        assert client.error() is None
    finally:
        done.touch()
        if client is not None:
            client.close()
        th.join(timeout=30)
    stored = list(RunStore(run, create=False).events())
    assert got == stored
    assert len(got) > len(history)                     # live events arrived after the attach
    kinds = [(e["kind"], e["by"]) for e in stored if e["type"] == "action"]
    assert kinds == [("pause", "user"), ("resume", "user")]
    assert got[-1]["type"] == "status" and got[-1]["status"] == "finished"
    # the command line, on the finished run, and a clear error for a wrong path
    env = dict(os.environ, SEGWATCH_SSH_OPTS=opts, SEGWATCH_REMOTE=f"{sys.executable} -m segwatch")
    r = subprocess.run(segwatch_cmd("attach", f"ssh://{user}@127.0.0.1:{port}{run}", "--headless"),
                       capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 0 and "FINISHED" in r.stderr, r.stderr
    r = subprocess.run(segwatch_cmd("attach", f"ssh://{user}@127.0.0.1:{port}{tmp_path}/nope", "--headless"),
                       capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 1 and "no run directory" in r.stderr, r.stderr
