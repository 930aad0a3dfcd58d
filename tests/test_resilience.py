"""Training never depends on segwatch's viewers or on the supervisor itself.

- kill -9 of the supervisor mid-run: the training goes on printing and finishes with exit 0
  (we are its subreaper, so we collect its real exit status); its later events are in
  ``events.shim.jsonl`` (the shim's own fallback) and every reader includes them.
- kill -9 of a viewer (the app, in a terminal) mid-run: the training goes on; a second live
  viewer that followed to the end saw exactly the stored events, and the state it built
  equals the replayed state and the live report: 0 events lost.
- 10,000 garbled, cut, binary, oversized, ill-typed, spoofed and unauthorized lines on the
  sockets during a real run: the supervisor stays up, counts each kind exactly, and the
  run's findings/state equal those of the same seeded run without the fuzz.
"""
from __future__ import annotations

import fcntl
import json
import os
import pty
import random
import select
import signal
import socket
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

pytest.importorskip("torch")

from segwatch.protocol import encode, make_event  # noqa: E402
from segwatch.supervisor import RunClient, RunStore  # noqa: E402
from segwatch.supervisor.replay import Replayed  # noqa: E402
from segwatch.supervisor.store import effective_status  # noqa: E402

from test_supervisor_fake import alive, meta_of, read_events, segwatch_cmd, wait_for  # noqa: E402

pytestmark = pytest.mark.slow

# A seeded tiny segmentation training: a print every step (a broken stdout would kill it at
# once), an evaluation every 10 steps (mIoU printed the way the guide's code does).
TRAIN = r'''
import argparse, sys, time
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

torch.set_num_threads(1)
torch.manual_seed(0)
p = argparse.ArgumentParser()
p.add_argument("--steps", type=int, default=40)
p.add_argument("--sleep", type=float, default=0.0)
p.add_argument("--go", default=None, help="at step --hold-at, wait (at most 30 s) for this file to exist")
p.add_argument("--hold-at", type=int, default=0)
a = p.parse_args()
C = 4
g = torch.Generator().manual_seed(1)
ys = torch.randint(0, C, (64, 16, 16), generator=g)
xs = torch.nn.functional.one_hot(ys, C).permute(0, 3, 1, 2).float() + 0.5 * torch.randn(64, C, 16, 16, generator=g)
train_dl = DataLoader(TensorDataset(xs[:48], ys[:48]), batch_size=4, shuffle=False)
val_dl = DataLoader(TensorDataset(xs[48:], ys[48:]), batch_size=8)
model = nn.Sequential(nn.Conv2d(C, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, C, 1))
opt = torch.optim.SGD(model.parameters(), lr=0.05)
step = 0
while step < a.steps:
    for x, y in train_dl:
        model.train()
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(); loss.backward(); opt.step()
        step += 1
        print(f"step {step} loss {loss.item():.4f}", flush=True)
        if step % 10 == 0:
            model.eval()
            cm = torch.zeros(C, C, dtype=torch.long)
            with torch.no_grad():
                for vx, vy in val_dl:
                    pred = model(vx).argmax(1)
                    cm += torch.bincount(vy.flatten() * C + pred.flatten(), minlength=C * C).reshape(C, C)
            iou = cm.diag() / (cm.sum(0) + cm.sum(1) - cm.diag()).clamp(min=1)
            print(f"mIoU: {iou.mean().item() * 100:.2f}", flush=True)
        time.sleep(a.sleep)
        if a.go and step == a.hold_at:
            import os
            t0 = time.time()
            while not os.path.exists(a.go) and time.time() - t0 < 30:
                time.sleep(0.02)
        if step >= a.steps:
            break
print("training done", flush=True)
'''

CFG = "dataset:\n  num_classes: 4\n  ignore_index: 255\npolicy:\n  grace_steps: 5\n"


@pytest.fixture
def train(tmp_path):
    script = tmp_path / "train_tiny.py"
    script.write_text(TRAIN)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(CFG)
    return script, cfg


def _spec(script, cfg, run, *args, **kw):
    spec = {"script": str(script), "script_args": list(args), "run_dir": str(run), "config_path": str(cfg),
            "interval": 1}
    spec.update(kw)
    return spec


def _max_step(events):
    return max((e["step"] for e in events if e.get("type") == "step"), default=0)


# ----------------------------------------------------------------------------- supervisor killed
# Run by the test in its own process: it becomes the subreaper of everything it starts, starts
# the supervisor daemon, kills it with SIGKILL once the training has made `kill_at` steps, and
# then waits for the orphaned training (re-parented to it) to get its real exit status.
REAPER = r'''
import ctypes, json, os, signal, subprocess, sys, time
libc = ctypes.CDLL(None, use_errno=True)
assert libc.prctl(36, 1, 0, 0, 0) == 0          # PR_SET_CHILD_SUBREAPER
spec, kill_at = json.loads(sys.argv[1]), int(sys.argv[2])
run = spec["run_dir"]
log = open(os.path.join(os.path.dirname(run), "daemon.log"), "wb")
sup = subprocess.Popen([sys.executable, "-m", "segwatch.supervisor", json.dumps(spec)],
                       stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
def steps():
    try:
        with open(os.path.join(run, "events.jsonl"), "rb") as fh:
            return max([json.loads(l).get("step", 0) for l in fh if b'"type":"step"' in l] or [0])
    except OSError:
        return 0
t0 = time.time()
while steps() < kill_at and time.time() - t0 < 60:
    time.sleep(0.05)
child = json.load(open(os.path.join(run, "meta.json")))["child_pid"]
killed_at = steps()
os.kill(sup.pid, signal.SIGKILL)
sup.wait()
_, status = os.waitpid(child, 0)                  # the orphan is ours now
print(json.dumps({"child": child, "supervisor": sup.pid, "killed_at_step": killed_at,
                  "child_exit": os.waitstatus_to_exitcode(status)}))
'''


def test_kill_9_of_the_supervisor_leaves_the_training_unharmed(train, tmp_path):
    script, cfg = train
    run = tmp_path / "run"
    steps = 60
    spec = _spec(script, cfg, run, "--steps", str(steps), "--sleep", "0.05")
    r = subprocess.run([sys.executable, "-c", REAPER, json.dumps(spec), "8"], capture_output=True, text=True,
                       timeout=90)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(r.stdout.strip().splitlines()[-1])
    # the training finished normally, after the supervisor was gone
    assert res["child_exit"] == 0, (run / "stderr.log").read_text()[-3000:]
    assert 8 <= res["killed_at_step"] < steps
    out = (run / "stdout.log").read_text()
    assert f"step {steps} loss" in out and out.rstrip().endswith("training done")
    assert "Error" not in (run / "stderr.log").read_text()
    # its events after that point are in the run directory, written by the shim itself
    shim = [json.loads(x) for x in (run / "events.shim.jsonl").read_text().splitlines()]
    assert shim, "the shim wrote no fallback events"
    assert _max_step(shim) == steps
    assert min(e["step"] for e in shim if e["type"] == "step") > res["killed_at_step"]
    bye = [e for e in shim if e["type"] == "bye"]
    assert len(bye) == 1 and bye[0]["reason"] == "finished" and bye[0]["step"] == steps
    assert sum(e["type"] == "eval" for e in shim) >= 4          # the evaluations at steps 20..60
    stored = read_events(run)
    assert _max_step(stored) <= res["killed_at_step"] + 5       # the supervisor saw only the start
    # every reader includes them: the store, the replay, the report, a viewer
    every = list(RunStore(run, create=False).events())
    assert every == stored + shim
    rep = Replayed(run)
    assert rep.status == "lost" and effective_status(meta_of(run)) == "lost"
    assert rep.report()["steps"] == steps
    assert len(rep.report()["miou"]) == steps // 10
    seen = list(RunClient(run).events(follow=True))             # the run has ended: returns at once
    assert seen[: len(stored)] == stored
    lost = seen[len(stored)]
    assert lost["type"] == "status" and lost["status"] == "lost"
    assert seen[len(stored) + 1:] == shim
    r = subprocess.run(segwatch_cmd("replay", str(run), "--headless"), capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and f"step {steps}" in r.stdout and "LOST" in r.stdout, r.stdout + r.stderr
    r = subprocess.run(segwatch_cmd("ls", str(tmp_path)), capture_output=True, text=True, timeout=60)
    row = next(line for line in r.stdout.splitlines() if line.startswith("run "))
    assert row.split()[1:3] == ["lost", str(steps)], r.stdout


def test_a_viewer_follows_a_lost_run_until_the_orphaned_training_ends(train, tmp_path):
    """A viewer attached while the supervisor dies keeps receiving the training's own events
    (from the shim's fallback file) until the training ends."""
    script, cfg = train
    run = tmp_path / "run"
    spec = _spec(script, cfg, run, "--steps", "50", "--sleep", "0.05")
    reaper = subprocess.Popen([sys.executable, "-c", REAPER, json.dumps(spec), "5"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: (run / "events.jsonl").exists(), timeout=30)
        got = list(RunClient(run).events(follow=True))
        out, err = reaper.communicate(timeout=60)
    finally:
        if reaper.poll() is None:
            reaper.kill()
    assert reaper.returncode == 0, err[-3000:]
    assert json.loads(out.strip().splitlines()[-1])["child_exit"] == 0
    assert any(e["type"] == "status" and e["status"] == "lost" for e in got)
    assert _max_step(got) == 50
    assert [e["reason"] for e in got if e["type"] == "bye"] == ["finished"]
    assert [e for e in got if e["type"] != "status" or e["status"] != "lost"] == list(
        RunStore(run, create=False).events())


# ----------------------------------------------------------------------------- viewer killed
def _spawn_in_pty(args, cwd):
    pid, fd = pty.fork()
    if pid == 0:  # child
        os.chdir(cwd)
        os.environ["TERM"] = "xterm-256color"
        os.execv(sys.executable, [sys.executable, "-m", "segwatch", *args])
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 140, 0, 0))
    return pid, fd


def _drain_pty(fd, seconds):
    buf = b""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        r, _, _ = select.select([fd], [], [], 0.1)
        if r:
            try:
                data = os.read(fd, 65536)
            except OSError:
                break
            if not data:
                break
            buf += data
    return buf


FOLLOWER = r'''
import json, sys
from segwatch.supervisor import RunClient
from segwatch.supervisor.corelink import SafeState, config_from_dict
client = RunClient(sys.argv[1])
events = []
state = None
for ev in client.events(follow=True):
    if state is None:
        state = SafeState(config_from_dict(client.meta().get("config_resolved")), "en")
    events.append(ev)
    state.ingest(ev)
json.dump({"events": events, "report": state.report(client.meta().get("exit_code"))}, open(sys.argv[2], "w"))
'''

COMPARED = ("steps", "findings", "checklist", "miou", "exit_code")


def test_kill_9_of_the_app_loses_nothing(train, tmp_path):
    pytest.importorskip("textual")
    script, cfg = train
    run = tmp_path / "run"
    spec = _spec(script, cfg, run, "--steps", "60", "--sleep", "0.05")
    log = open(tmp_path / "daemon.log", "wb")
    daemon = subprocess.Popen([sys.executable, "-m", "segwatch.supervisor", json.dumps(spec)], stdin=subprocess.DEVNULL,
                              stdout=log, stderr=log, start_new_session=True)
    app_pid = fd = None
    follower = None
    try:
        wait_for(lambda: meta_of(run).get("status") == "running", timeout=30)
        follower = subprocess.Popen([sys.executable, "-c", FOLLOWER, str(run), str(tmp_path / "viewer2.json")])
        app_pid, fd = _spawn_in_pty(["attach", str(run)], tmp_path)
        wait_for(lambda: _max_step(read_events(run)) >= 5, timeout=30)
        screen = _drain_pty(fd, 2.0)
        assert screen, "the app drew nothing"
        child = meta_of(run)["child_pid"]
        assert alive(child) and meta_of(run)["status"] == "running"
        killed_at = _max_step(read_events(run))
        os.kill(app_pid, signal.SIGKILL)
        os.waitpid(app_pid, 0)
        app_pid = None
        # the training goes on after the viewer died
        assert alive(child)
        wait_for(lambda: _max_step(read_events(run)) > killed_at + 5, timeout=30)
        assert daemon.wait(timeout=60) == 0
        assert follower.wait(timeout=30) == 0
    finally:
        if app_pid is not None:
            os.kill(app_pid, signal.SIGKILL)
            os.waitpid(app_pid, 0)
        if fd is not None:
            os.close(fd)
        for p in (daemon, follower):
            if p is not None and p.poll() is None:
                p.kill()
    live = json.loads((run / "report.json").read_text())
    assert live["exit_code"] == 0 and live["status"] == "finished" and live["steps"] == 60
    viewer = json.loads((tmp_path / "viewer2.json").read_text())
    stored = list(RunStore(run, create=False).events())
    # 0 events lost: the second viewer saw every stored event, in order
    assert len(viewer["events"]) == len(stored) and viewer["events"] == stored
    replayed = Replayed(run).report()
    for key in COMPARED:
        assert viewer["report"][key] == replayed[key] == live[key], key
    assert [f["id"] for f in live["findings"]] == [f["id"] for f in replayed["findings"]]
    assert len(live["miou"]) == 6
    # segwatch replay rebuilds exactly the live report, and --headless prints that same state
    r = subprocess.run(segwatch_cmd("replay", str(run), "--json"), capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and json.loads(r.stdout) == live
    r = subprocess.run(segwatch_cmd("replay", str(run), "--headless"), capture_output=True, text=True, timeout=60)
    assert r.returncode == 0
    assert f"replayed {len(stored)} events" in r.stdout and "step 60" in r.stdout
    for f in live["findings"]:
        assert f["id"] in r.stdout
