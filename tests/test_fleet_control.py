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


# --------------------------------------------------------------------------- the agreement's schedule (fast)
class _FakeAgreement:
    """One rank's view of the all-reduce: MAX of its own flag and the other nodes' flag."""

    def __init__(self, shim, other, fail_at=None):
        self.shim, self.other, self.fail_at = shim, other, fail_at
        self.issued: list[tuple[int, int]] = []   # (optimizer step, own flag)
        self.value, self.pending = 0, False

    def issue(self, flag):
        if self.fail_at is not None and self.shim._pause_steps >= self.fail_at:
            raise RuntimeError("Connection closed by peer")
        self.issued.append((self.shim._pause_steps, flag))
        self.value, self.pending = max(flag, self.other()), True

    def read(self):
        v, self.pending = (self.value if self.pending else 0), False
        return v


def _shim(tmp_path, monkeypatch, other, fail_at=None):
    import torch.distributed as dist

    from segwatch.shim import pause as pause_mod
    from segwatch.shim.emitter import MemoryEmitter
    from segwatch.shim.runtime import Shim

    monkeypatch.setenv("SEGWATCH_PAUSE_FILE", str(tmp_path / "pause"))
    monkeypatch.delenv("SEGWATCH_PAUSE_EVERY", raising=False)
    monkeypatch.setattr(pause_mod, "POLL_S", 0.0)
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    shim = Shim(emitter=MemoryEmitter())
    fakes = []
    monkeypatch.setattr(pause_mod, "_make_agreement",
                        lambda s: fakes.append(_FakeAgreement(s, other, fail_at)) or fakes[-1])
    return shim, fakes


def _notes(shim, word):
    return [e for e in shim.emitter.items if e.get("type") == "probe" and e.get("name") == "pause"
            and word in e.get("message", "")]


def test_agreement_every_16_steps_pauses_at_the_agreed_step_and_resumes_together(tmp_path, monkeypatch):
    """Another node asks from optimizer step 20 on: the flag is all-reduced at step 32, read at
    48, and the rank pauses there; it stays paused while the other node asks (3 more rounds)."""
    rounds = {"n": 0}

    def other():
        s = shim._pause_steps
        if s < 20:
            return 0
        if s == 48:                         # inside the pause loop (the step does not move)
            rounds["n"] += 1
            return 1 if rounds["n"] <= 4 else 0
        return 1 if s < 48 else 0

    shim, fakes = _shim(tmp_path, monkeypatch, other)
    for _ in range(100):
        shim._pause_hook(None, (), {})
    ag = fakes[0]
    outside = [s for s, _ in ag.issued if s != 48]
    assert outside == [16, 32, 64, 80, 96]              # only at n % 16 == 0
    assert [s for s, _ in ag.issued].count(48) == 1 + 4     # the agreement step, then the paused rounds
    paused = _notes(shim, "paused at")
    assert len(paused) == 1 and "optimizer step 48" in paused[0]["message"]
    assert "asked on another node" in paused[0]["message"]
    assert len(_notes(shim, "resumed")) == 1
    assert all(f == 0 for _, f in ag.issued)            # this node never asked


def test_own_pause_file_is_the_flag_and_holds_the_pause(tmp_path, monkeypatch):
    pause = tmp_path / "pause"
    loop = {"n": 0}

    def other():                            # no other node asks; this node resumes in round 2
        if shim._pause_steps == 48 and pause.exists():
            loop["n"] += 1
            if loop["n"] == 3:              # the agreement step's issue, then paused rounds 1, 2
                pause.unlink()
        return 0

    shim, fakes = _shim(tmp_path, monkeypatch, other)
    for _ in range(20):
        shim._pause_hook(None, (), {})
    pause.touch()                           # this node's supervisor asks at step 20
    for _ in range(40):
        shim._pause_hook(None, (), {})
    assert fakes[0].issued == [(16, 0), (32, 1), (48, 1), (48, 1), (48, 1), (48, 0)]
    paused = _notes(shim, "paused at")
    assert len(paused) == 1 and "optimizer step 48" in paused[0]["message"]
    assert "asked on this node" in paused[0]["message"]
    assert len(_notes(shim, "resumed")) == 1


def test_agreement_error_falls_back_to_the_node_pause_file(tmp_path, monkeypatch):
    """A failed all-reduce (a peer gone) disables the agreement on this rank: a probe
    ``disabled`` event, and the node's pause file is checked at every step again."""
    shim, fakes = _shim(tmp_path, monkeypatch, lambda: 0, fail_at=32)
    for _ in range(40):
        shim._pause_hook(None, (), {})          # never raises into optimizer.step()
    assert fakes[0].issued == [(16, 0)]
    assert shim._agree is False and shim._pause_file == str(tmp_path / "pause")
    assert shim._pause_next == 41               # file mode: every step
    dis = [e for e in shim.emitter.items if e.get("status") == "disabled"]
    assert [e["name"] for e in dis] == ["pause_agreement"] and "peer" in dis[0]["error"]
    assert shim._agree_errors == 1


def test_no_agreement_without_a_process_group(tmp_path, monkeypatch):
    """No torch.distributed group (or world size 1): the node's pause file as before; the
    hook is registered only for distributed runs (SEGWATCH_PAUSE_FILE)."""
    from segwatch.shim.emitter import MemoryEmitter
    from segwatch.shim.runtime import Shim

    monkeypatch.setenv("SEGWATCH_PAUSE_FILE", str(tmp_path / "pause"))
    shim = Shim(emitter=MemoryEmitter())
    for _ in range(3):
        shim._pause_hook(None, (), {})
    assert shim._agree is False and shim._pause_next == 4
    monkeypatch.delenv("SEGWATCH_PAUSE_FILE")
    assert Shim(emitter=MemoryEmitter())._pause_next > 1 << 60


def test_ranks_paused_by_another_node_are_not_silent():
    """Node 0's supervisor was not asked to pause (node 1 was): its ranks' "still paused" notes
    every 30 s keep dist.rank_silent quiet; without them, all_silent fires as for a hang."""
    from segwatch.core.state import RunState

    def run(heartbeat: bool) -> RunState:
        st = RunState()
        t = 1000.0
        for s in range(1, 6):
            for r in (0, 1):
                st.ingest({"v": 1, "type": "step", "t": t + s, "rank": r, "world_size": 4, "step": s, "loss": 1.0})
        for k in range(1, 40):
            tk = t + 10 * k
            if heartbeat and k % 3 == 0:
                for r in (0, 1):
                    st.ingest({"v": 1, "type": "probe", "t": tk, "rank": r, "world_size": 4, "name": "pause",
                               "status": "note", "step": 5, "message": f"rank {r} still paused ({10 * k} s)"})
            st.ingest({"v": 1, "type": "proc", "t": tk, "cpu": 0.0, "rss": 1, "procs": 3})
        return st

    assert run(False).findings["dist.rank_silent"].evidence["all_silent"] is True
    assert "dist.rank_silent" not in run(True).findings


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
                       env=_env(), cwd=str(tmp_path), timeout=180)
    return r.returncode, r.stdout + r.stderr


@pytest.mark.slow
@needs_torch
@pytest.mark.timeout(900)   # bounds for a loaded 2-core CI machine; the waits end when their condition holds
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
        _wait(lambda: len(_steps(dirs)) == 4 and min(_steps(dirs).values()) >= 10, 300, "4 ranks stepping")
        for s in sups:
            tree |= {p.pid for p in psutil.Process(s.pid).children(recursive=True)}
        assert len(tree) >= 6                      # 2 x (torchrun + 2 ranks)

        # a pause asked on node 1 only: the agreement carries it to node 0's ranks
        code, text = _ctl(tmp_path, str(dirs[1]), "pause")
        assert code == 0, text
        paused = _wait(lambda: (lambda n: n if {e["rank"] for e in n} == {0, 1, 2, 3} else None)(
            _pause_notes(dirs, "paused at")), 120, "every rank paused")
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
        _wait(lambda: all(v >= before[r] + 5 for r, v in _steps(dirs).items()), 120, "every rank resumed")
        assert {e["rank"] for e in _pause_notes(dirs, "resumed")} == {0, 1, 2, 3}

        # a fleet pause (quoted glob), then a fleet kill while every rank waits
        for s in sups:
            tree |= {p.pid for p in psutil.Process(s.pid).children(recursive=True)}
        code, text = _ctl(tmp_path, str(tmp_path / "job" / "node*"), "pause")
        assert code == 0, text
        _wait(lambda: len(_pause_notes(dirs, "paused at")) >= 8, 120, "paused again")
        second = {e["rank"]: e["step"] for e in _pause_notes(dirs, "paused at")[-8:]}
        assert len(second) == 4 and len(set(second.values())) == 1, second
        code, text = _ctl(tmp_path, "--fleet", str(_fleet_file(tmp_path, dirs)), "kill")
        assert code == 0, text
        for s in sups:
            try:
                s.communicate(timeout=120)
            except subprocess.TimeoutExpired:
                raise AssertionError("a supervisor did not end after the fleet kill")
            assert s.returncode != 0
        for d in dirs:
            assert json.loads((d / "meta.json").read_text())["status"] == "killed"
        _wait(lambda: all(not psutil.pid_exists(p) or psutil.Process(p).status() == psutil.STATUS_ZOMBIE
                          for p in tree), 60, "no process of either tree left")
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
