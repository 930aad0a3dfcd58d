"""Pause, resume and kill across nodes (issue 18 item 3): `segwatch ctl` on a fleet
(segwatch/fleet/control.py) and the ranks' agreement over their process group
(segwatch/shim/pause.py).

The slow test runs 2 "nodes" x 2 ranks on this machine through the real CLI (two `segwatch
run --nnodes 2` supervisors, two run directories, gloo on loopback): a pause asked on ONE
node stops all four ranks at the same optimizer step; resume on the fleet continues them;
a fleet pause then kill leaves no process.
"""
from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from segwatch.fleet.control import NodeAck, control_fleet, fleet_lines

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "dist_scripts" / "train_ddp.py"
CFG = "dataset: {num_classes: 4, ignore_index: 255}\npolicy: {grace_steps: 5}\n"

needs_torch = pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch is not installed")


# --------------------------------------------------------------------------- fan-out (fast)
class _FakeClient:
    def __init__(self, target, token, answers, log):
        self.target, self.answers, self.log = target, answers, log

    def control(self, cmd):
        from segwatch.supervisor import ControlError

        self.log.append((self.target, cmd))
        a = self.answers[self.target]
        if isinstance(a, Exception):
            raise a
        if a == "ended":
            raise ControlError("the run has ended (finished)")
        return a

    def close(self):
        self.log.append((self.target, "close"))


def test_fan_out_sends_to_every_node_and_reports_each():
    from segwatch.supervisor import ControlError

    nodes = [{"target": f"/runs/node{k}", "name": f"node{k}"} for k in range(4)]
    answers = {"/runs/node0": {"ok": True, "status": "paused"}, "/runs/node1": "ended",
               "/runs/node2": ControlError("cannot connect"), "/runs/node3": {"ok": False, "error": "the run is ending"}}
    log: list = []
    acks = control_fleet(nodes, "pause", make_client=lambda t, tok: _FakeClient(t, tok, answers, log))
    assert [a.name for a in acks] == ["node0", "node1", "node2", "node3"]
    assert [a.ok for a in acks] == [True, False, False, False]
    assert acks[1].ended and "cannot connect" in acks[2].error and acks[3].error == "the run is ending"
    assert sorted(t for t, c in log if c == "pause") == [n["target"] for n in nodes]
    assert sorted(t for t, c in log if c == "close") == [n["target"] for n in nodes]   # every client closed
    lines = fleet_lines("pause", acks)
    assert lines[0] == "node0: pause: ok (status paused)" and "already ended" in lines[1]
    # kill: a node whose run has ended has nothing left to stop
    acks = control_fleet(nodes[:2], "kill", make_client=lambda t, tok: _FakeClient(t, tok, answers, log))
    assert [a.ok for a in acks] == [True, True]


def test_ctl_usage(tmp_path, capsys):
    from segwatch.cli import main

    assert main(["ctl", str(tmp_path / "nope*"), "pause"]) == 2          # a glob matching nothing
    assert main(["ctl", str(tmp_path), "bogus"]) == 2                     # not a command
    assert main(["pause", "--fleet", str(tmp_path / "missing.yaml")]) == 2
    a, b = tmp_path / "a", tmp_path / "b"                                # no live run behind them
    a.mkdir(), b.mkdir()
    assert main(["ctl", str(a), str(b), "kill", "--json"]) == 1
    acks = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [x["node"] for x in acks] == ["a", "b"] and not any(x["ok"] for x in acks)
    assert NodeAck("n", "t", True).to_dict()["ok"]


# --------------------------------------------------------------------------- 2 nodes x 2 ranks (slow)
def _env() -> dict:
    root = str(HERE.parent)
    pp = os.environ.get("PYTHONPATH", "")
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=root + (os.pathsep + pp if pp else ""))


def _events(run_dir: Path) -> list[dict]:
    out = []
    try:
        with open(run_dir / "events.jsonl") as fh:
            for line in fh:
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass         # a line being written
    except FileNotFoundError:
        pass
    return out


def _all_events(dirs) -> list[dict]:
    return [e for d in dirs for e in _events(d)]


def _steps(dirs) -> dict[int, int]:
    out: dict[int, int] = {}
    for e in _all_events(dirs):
        if e.get("type") == "step" and isinstance(e.get("step"), int):
            out[e["rank"]] = max(out.get(e["rank"], 0), e["step"])
    return out


def _pause_notes(dirs, word: str) -> list[dict]:
    return [e for e in _all_events(dirs) if e.get("type") == "probe" and e.get("name") == "pause"
            and word in (e.get("message") or "")]


def _wait(pred, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting: {what}")


def _ctl(tmp_path: Path, *args: str) -> tuple[int, str]:
    r = subprocess.run([sys.executable, "-m", "segwatch", "ctl", *args], capture_output=True, text=True,
                       env=_env(), cwd=str(tmp_path), timeout=60)
    return r.returncode, r.stdout + r.stderr


@pytest.mark.slow
@needs_torch
@pytest.mark.timeout(240)
def test_pause_on_one_node_stops_all_four_ranks_then_resume_and_fleet_kill(tmp_path):
    import psutil

    from segwatch.supervisor.dist import free_port

    port = str(free_port())
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(CFG)
    out = tmp_path / "out"
    out.mkdir()
    dirs = [tmp_path / "job" / f"node{k}" for k in (0, 1)]
    sups = [subprocess.Popen(
        [sys.executable, "-m", "segwatch", "run", "--nproc", "2", "--nnodes", "2", "--node-rank", str(k),
         "--master-addr", "127.0.0.1", "--master-port", port, "--headless", "--run-dir", str(dirs[k]),
         "--config", str(cfg), str(SCRIPT), "--", "--out", str(out), "--steps", "100000",
         "--eval-every", "1000000", "--sleep", "0.02"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=str(tmp_path), env=_env()) for k in (0, 1)]
    tree: set[int] = set()
    try:
        _wait(lambda: len(_steps(dirs)) == 4 and min(_steps(dirs).values()) >= 10, 90, "4 ranks stepping")
        for s in sups:
            tree |= {p.pid for p in psutil.Process(s.pid).children(recursive=True)}
        assert len(tree) >= 6                      # 2 x (torchrun + 2 ranks)

        # a pause asked on node 1 only: the agreement carries it to node 0's ranks
        code, text = _ctl(tmp_path, str(dirs[1]), "pause")
        assert code == 0, text
        paused = _wait(lambda: (lambda n: n if {e["rank"] for e in n} == {0, 1, 2, 3} else None)(
            _pause_notes(dirs, "paused at")), 30, "every rank paused")
        at = {e["rank"]: e["step"] for e in paused}
        assert len(set(at.values())) == 1, at      # the same step on all four ranks
        assert all("asked on another node" in e["message"] for e in paused if e["rank"] in (0, 1))
        assert all("asked on this node" in e["message"] for e in paused if e["rank"] in (2, 3))
        time.sleep(0.5)
        before = _steps(dirs)
        assert set(before.values()) == {next(iter(at.values()))}   # nobody went past the pause step
        time.sleep(2.0)
        assert _steps(dirs) == before              # no rank advances on either node
        for pid in tree:                           # cooperative: sleeping, nobody SIGSTOPped
            try:
                assert psutil.Process(pid).status() != psutil.STATUS_STOPPED
            except psutil.NoSuchProcess:
                pass

        # resume on the fleet (both run directories): every rank goes on
        code, text = _ctl(tmp_path, str(dirs[0]), str(dirs[1]), "resume")
        assert code == 0, text
        assert "node0: resume: ok" in text and "node1: resume: ok" in text
        _wait(lambda: all(v >= before[r] + 5 for r, v in _steps(dirs).items()), 30, "every rank resumed")
        assert {e["rank"] for e in _pause_notes(dirs, "resumed")} == {0, 1, 2, 3}

        # a fleet pause (quoted glob), then a fleet kill while every rank waits
        for s in sups:
            tree |= {p.pid for p in psutil.Process(s.pid).children(recursive=True)}
        code, text = _ctl(tmp_path, str(tmp_path / "job" / "node*"), "pause")
        assert code == 0, text
        _wait(lambda: len(_pause_notes(dirs, "paused at")) >= 8, 30, "paused again")
        second = {e["rank"]: e["step"] for e in _pause_notes(dirs, "paused at")[-8:]}
        assert len(second) == 4 and len(set(second.values())) == 1, second
        code, text = _ctl(tmp_path, "--fleet", str(_fleet_file(tmp_path, dirs)), "kill")
        assert code == 0, text
        for s in sups:
            try:
                s.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                raise AssertionError("a supervisor did not end after the fleet kill")
            assert s.returncode != 0
        for d in dirs:
            assert json.loads((d / "meta.json").read_text())["status"] == "killed"
        _wait(lambda: all(not psutil.pid_exists(p) or psutil.Process(p).status() == psutil.STATUS_ZOMBIE
                          for p in tree), 20, "no process of either tree left")
    finally:
        for s in sups:
            if s.poll() is None:
                s.send_signal(signal.SIGKILL)
                s.wait()
        for pid in tree:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


def _fleet_file(tmp_path: Path, dirs) -> Path:
    f = tmp_path / "fleet.yaml"
    f.write_text("nodes:\n" + "".join(f"  - {d}\n" for d in dirs))
    return f
