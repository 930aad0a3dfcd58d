"""A fake training child that speaks the protocol itself (no torch, no shim), and helpers
shared by the supervisor and CLI tests. The child is run with ``--no-shim`` / use_shim=False.

Modes (first argument):
    normal CODE    hello, 5 steps, prints "mIoU: 12.5" and the socket's mode, exits with CODE
    selfkill SIG   a few steps, then kills itself with signal SIG
    collapse N     steps 1..N every 20 ms; from step 101 the predictions are one class
    workers        starts two "worker" processes (like DataLoader workers), prints their pids,
                   then steps slowly for up to 60 s
    garbage N      N garbled lines and an oversized line on the socket, then valid events
    flood N        N step events at once, then 20 more over 2 s
    nan            steps every 20 ms; the loss is NaN from step 20
    slow S         prints a step every 50 ms for S seconds
    until FILE     prints a step every 50 ms until FILE exists (at most 120 s), then exits 0:
                   for tests that must act while the run is alive, however loaded the machine
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil

FAKE_CHILD = r'''
import os, socket, stat, subprocess, sys, time, signal
from segwatch.protocol import encode, make_event

mode = sys.argv[1]
arg = sys.argv[2] if len(sys.argv) > 2 else "0"
sock = socket.socket(socket.AF_UNIX)
sock.connect(os.environ["SEGWATCH_SOCKET"])

def send(type_, **kw):
    kw.setdefault("rank", 0); kw.setdefault("world_size", 1)
    sock.sendall(encode(make_event(type_, **kw)))

send("hello", pid=os.getpid(), script=sys.argv[0], argv=sys.argv[1:])
if mode == "normal":
    for i in range(1, 6):
        send("step", step=i, loss=1.0 / i, grad_norm=0.5, lr=[1e-3])
        print(f"step {i} loss {1.0 / i:.3f}", flush=True)
    st = os.stat(os.environ["SEGWATCH_SOCKET"])
    print("sockmode %o" % stat.S_IMODE(st.st_mode), flush=True)
    print("mIoU: 12.5", flush=True)
    print("a warning", file=sys.stderr, flush=True)
    send("bye", step=5)
    sys.exit(int(arg))
elif mode == "selfkill":
    for i in range(1, 4):
        send("step", step=i, loss=1.0)
    time.sleep(0.1)
    os.kill(os.getpid(), int(arg))
    time.sleep(5)
elif mode == "collapse":
    n = int(arg)
    for i in range(1, n + 1):
        send("step", step=i, loss=2.0, grad_norm=1.0, lr=[1e-3])
        if i > 100:
            send("preds", step=i, phase="train", shape=[2, 4, 8, 8], channels=4,
                 hist=[128, 0, 0, 0], gt_hist=[32, 32, 32, 32], unique=1)
        if i % 10 == 0:
            print(f"step {i}", flush=True)
        time.sleep(0.02)
    print("done", flush=True)
elif mode == "workers":
    code = "import time\nwhile True: time.sleep(0.2)"
    ws = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(2)]
    print("workers " + " ".join(str(w.pid) for w in ws), flush=True)
    t0 = time.time(); i = 0
    while time.time() - t0 < 60:
        i += 1
        send("step", step=i, loss=1.0)
        time.sleep(0.05)
elif mode == "garbage":
    n = int(arg)
    sock.sendall(b"".join(b"garbage line %d {not json\n" % k for k in range(n)))
    sock.sendall(b'{"v":1,"type":"step","t":1}\n')          # missing required field
    sock.sendall(b'{"v":1,"type":"nosuch","t":1}\n')        # unknown type
    sock.sendall(b"x" * (1 << 21) + b"\n")                    # oversized
    for i in range(1, 4):
        send("step", step=i, loss=0.5)
    print("sent", flush=True)
elif mode == "nan":
    for i in range(1, 200):
        send("step", step=i, loss=float("nan") if i >= 20 else 1.0, grad_norm=1.0)
        time.sleep(0.02)
elif mode == "flood":
    n = int(arg)
    sock.sendall(b"".join(encode(make_event("step", step=i, loss=0.5, grad_norm=1.0, rank=0, world_size=1,
                                            note="x" * 100)) for i in range(1, n + 1)))
    print("flooded", flush=True)
    for i in range(20):
        send("step", step=n + 1 + i, loss=0.5)
        time.sleep(0.1)
elif mode == "slow":
    t0 = time.time(); i = 0
    while time.time() - t0 < float(arg):
        i += 1
        send("step", step=i, loss=1.0)
        print(f"step {i}", flush=True)
        time.sleep(0.05)
elif mode == "until":
    t0 = time.time(); i = 0
    while not os.path.exists(arg) and time.time() - t0 < 120:
        i += 1
        send("step", step=i, loss=1.0)
        print(f"step {i}", flush=True)
        time.sleep(0.05)
'''


def write_fake(dirpath: Path) -> Path:
    p = Path(dirpath) / "fake_train.py"
    p.write_text(FAKE_CHILD)
    return p


def segwatch_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "segwatch", *args]


def read_events(run_dir: Path) -> list[dict]:
    out = []
    with open(Path(run_dir) / "events.jsonl") as fh:
        for line in fh:
            out.append(json.loads(line))
    return out


def wait_for(pred, timeout: float = 15.0, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(interval)
    raise AssertionError("timed out waiting")


def meta_of(run_dir: Path) -> dict:
    try:
        return json.loads((Path(run_dir) / "meta.json").read_text())
    except (FileNotFoundError, ValueError):
        return {}


def kill_tree(proc) -> None:
    """End a supervisor that a failing test leaves running, and its whole tree: SIGTERM
    first (the supervisor stops its child's tree itself), then SIGKILL whatever is left.
    A bare SIGKILL of the supervisor orphans torchrun and the ranks, which then load the
    machine for every later test."""
    if proc.poll() is not None:
        return
    try:
        kids = psutil.Process(proc.pid).children(recursive=True)
    except psutil.Error:
        kids = []
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except Exception:
        proc.kill()
        proc.wait()
    for k in kids:
        try:
            k.kill()
        except psutil.Error:
            pass


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def test_fake_child_source_compiles():
    compile(FAKE_CHILD, "fake_train.py", "exec")
