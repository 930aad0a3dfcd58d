"""The supervisor with the real shim on a tiny torch training (CPU, a few seconds each)."""
from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

from test_supervisor_fake import alive, meta_of, read_events, segwatch_cmd, wait_for  # noqa: E402

pytestmark = pytest.mark.slow

TINY = r'''
import argparse, sys, time
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

torch.set_num_threads(1)
p = argparse.ArgumentParser()
p.add_argument("--steps", type=int, default=30)
p.add_argument("--workers", type=int, default=0)
p.add_argument("--exit", type=int, default=0)
p.add_argument("--collapse", action="store_true")
p.add_argument("--forever", action="store_true")
a = p.parse_args()
C = 4

class Data(Dataset):
    def __len__(self): return 64
    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        y = torch.randint(0, C, (16, 16), generator=g)
        x = torch.nn.functional.one_hot(y, C).permute(2, 0, 1).float() + 0.3 * torch.randn(C, 16, 16, generator=g)
        return x, y

model = nn.Sequential(nn.Conv2d(C, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, C, 1))
if a.collapse:
    with torch.no_grad():
        model[2].weight.zero_(); model[2].bias.copy_(torch.tensor([10.0, 0, 0, 0]))
opt = torch.optim.SGD(model.parameters(), lr=0.0 if a.collapse else 0.1)
dl = DataLoader(Data(), batch_size=4, shuffle=True, num_workers=a.workers, persistent_workers=a.workers > 0)
val = DataLoader(Data(), batch_size=8)
step = 0
while step < a.steps or a.forever:
    for x, y in dl:
        model.train()
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(); loss.backward(); opt.step()
        step += 1
        if step % 10 == 0:
            print(f"step {step} loss {loss.item():.4f}", flush=True)
        if a.forever:
            time.sleep(0.02)
        if step >= a.steps and not a.forever:
            break
model.eval()
cm = torch.zeros(C, C, dtype=torch.long)
with torch.no_grad():
    for x, y in val:
        pred = model(x).argmax(1)
        cm += torch.bincount(y.flatten() * C + pred.flatten(), minlength=C * C).reshape(C, C)
iou = cm.diag() / (cm.sum(0) + cm.sum(1) - cm.diag()).clamp(min=1)
print(f"mIoU: {iou.mean().item() * 100:.2f}", flush=True)
sys.exit(a.exit)
'''


@pytest.fixture
def tiny(tmp_path):
    p = tmp_path / "tiny_train.py"
    p.write_text(TINY)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("dataset:\n  num_classes: 4\n  ignore_index: 255\npolicy:\n  grace_steps: 10\n")
    return p, cfg


def run(*args, rundir=None, timeout=90):
    p = subprocess.Popen(segwatch_cmd(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.send_signal(signal.SIGTERM)   # segwatch stops the training tree and writes the report
        out, err = p.communicate(timeout=30)
        raise AssertionError(f"segwatch run timed out; stderr: {err[-3000:]}")
    return subprocess.CompletedProcess(p.args, p.returncode, out, err)


def test_real_shim_normal_run(tiny, tmp_path):
    script, cfg = tiny
    rundir = tmp_path / "run"
    r = run("run", "--headless", "--config", str(cfg), "--run-dir", str(rundir), "--interval", "1",
            str(script), "--", "--steps", "30", "--exit", "3")
    assert r.returncode == 3, r.stderr[-3000:]
    evs = read_events(rundir)
    types = {e["type"] for e in evs}
    assert {"hello", "model", "step", "batch", "preds", "eval", "output", "status", "script_metric"} <= types, types
    hello = next(e for e in evs if e["type"] == "hello")
    assert hello["pid"] == meta_of(rundir)["child_pid"]
    rep = json.loads((rundir / "report.json").read_text())
    assert rep["exit_code"] == 3 and rep["steps"] >= 30 and rep["schema"] == "segwatch.report/1"
    assert rep["miou"], rep
    ids = {f["id"] for f in rep["findings"]}
    assert "metric.script_disagrees" not in ids, rep["findings"]
    assert "pred.collapse" not in ids
    assert rep["supervisor"]["protocol"]["invalid"] == 0
    assert "mIoU:" in r.stdout
    # a status line: periodic ("[segwatch] step 20 | ...") or, for a run shorter than one
    # interval, only the final one ("[segwatch] FINISHED step 30 | ...")
    assert re.search(r"^\[segwatch\] (?:[A-Z]+ )?step \d+ \|", r.stderr, re.M), r.stderr


def test_real_shim_policy_kill_on_collapse(tiny, tmp_path):
    script, cfg = tiny
    rundir = tmp_path / "run"
    r = run("run", "--headless", "--config", str(cfg), "--run-dir", str(rundir), "--on-collapse", "kill",
            str(script), "--", "--forever", "--collapse")
    assert r.returncode == 128 + signal.SIGTERM, r.stderr[-3000:]
    rep = json.loads((rundir / "report.json").read_text())
    assert rep["action"]["kind"] == "kill" and rep["action"]["finding"] == "pred.collapse"
    assert rep["action"]["by"] == "policy" and rep["action"]["step"] > 10
    assert "ERROR pred.collapse" in r.stderr


def test_real_shim_sigint_with_dataloader_workers(tiny, tmp_path):
    script, cfg = tiny
    rundir = tmp_path / "run"
    p = subprocess.Popen(segwatch_cmd("run", "--headless", "--config", str(cfg), "--run-dir", str(rundir),
                                      str(script), "--", "--forever", "--workers", "2"),
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        import psutil

        def tree():
            pid = meta_of(rundir).get("child_pid")
            if not pid or not any(e["type"] == "step" for e in read_events(rundir)):
                return None
            kids = psutil.Process(pid).children(recursive=True)
            return [pid] + [k.pid for k in kids] if len(kids) >= 2 else None
        pids = wait_for(tree, timeout=60)
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
    assert not any(alive(x) for x in pids), [x for x in pids if alive(x)]
    assert p.returncode in (128 + signal.SIGINT, 1, 128 + signal.SIGTERM), err[-2000:]
    rep = json.loads((rundir / "report.json").read_text())
    assert rep["action"]["kind"] == "kill" and rep["action"]["by"] == "user"
    assert meta_of(rundir)["status"] == "killed"
