"""Acceptance of the fleet view (issue 18 item 2) through the real CLI: 2 "nodes" x 2 ranks on
this machine (gloo, loopback rendezvous), each node with its own `segwatch run` supervisor and
run directory, then one fleet view of both.

Live vs replay: a `segwatch attach --headless --report` on both run directories is started
while the nodes train (it reads their history, then follows both live streams) and writes
the merged report when both have ended; `segwatch report --json DIR0 DIR1` rebuilds it from
the recorded events. The two must be equal.
"""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from test_remote_ssh import sshd  # noqa: F401  (the loopback sshd fixture)
from test_supervisor_fake import kill_tree

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "dist_scripts" / "train_ddp.py"
CFG = "dataset: {num_classes: 4, ignore_index: 255}\npolicy: {grace_steps: 5}\n"
STEPS, EVAL_EVERY = 60, 20

needs_torch = pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch is not installed")


def _env() -> dict:
    import os

    root = str(HERE.parent)
    pp = os.environ.get("PYTHONPATH", "")
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=root + (os.pathsep + pp if pp else ""))


def _segwatch(*args: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "segwatch", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd=str(cwd), env=_env())


def _finish(proc: subprocess.Popen, timeout: float) -> tuple[int, str, str]:
    try:
        o, e = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_tree(proc)
        o, e = proc.communicate()
        raise AssertionError(f"segwatch did not end:\n{e.decode()[-3000:]}")
    return proc.returncode, o.decode(), e.decode()


@pytest.mark.slow
@needs_torch
@pytest.mark.timeout(900)   # bounds for a loaded 2-core CI machine; waits end when their condition holds
def test_two_nodes_two_ranks_one_fleet_view(tmp_path):
    from segwatch.fleet.sources import ReplayedFleet
    from segwatch.runs import RunDir
    from segwatch.supervisor.dist import free_port

    port = str(free_port())
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(CFG)
    out = tmp_path / "out"
    out.mkdir()
    dirs = [tmp_path / "job" / f"node{k}" for k in (0, 1)]
    # no DistributedSampler (same batches on all 4 ranks); NaN loss on node 1, local rank 1
    nodes = [_segwatch("run", "--nproc", "2", "--nnodes", "2", "--node-rank", str(k), "--master-addr", "127.0.0.1",
                       "--master-port", port, "--headless", "--run-dir", str(dirs[k]), "--config", str(cfg),
                       str(SCRIPT), "--", "--out", str(out), "--steps", str(STEPS), "--eval-every", str(EVAL_EVERY),
                       "--fault", "same_batches,nan_rank3", cwd=tmp_path) for k in (0, 1)]
    deadline = time.monotonic() + 240
    while not all(d.is_dir() and RunDir(d).has_meta() for d in dirs):
        assert time.monotonic() < deadline, "the supervisors did not start"
        assert all(p.poll() is None for p in nodes), "a node ended before it started"
        time.sleep(0.1)
    live_report = tmp_path / "live.json"
    attach = _segwatch("attach", "--headless", "--interval", "1", "--report", str(live_report),
                       str(tmp_path / "job" / "node*"), cwd=tmp_path)     # a quoted glob of the nodes' dirs
    for k, p in enumerate(nodes):
        code, _, err = _finish(p, 480)
        assert code == 0, f"node {k}:\n{err[-3000:]}"
    code, _, attach_err = _finish(attach, 120)
    assert code == 0, attach_err[-3000:]
    assert "fleet of 2 nodes" in attach_err and "loss.nonfinite" in attach_err

    # each node alone sees only its own 2 ranks ...
    for k, d in enumerate(dirs):
        rep = RunDir(d).read_report()
        assert rep["ranks"]["reporting_here"] == 2
        assert [r["rank"] for r in rep["ranks"]["per_rank"] if r["seen"]] == [2 * k, 2 * k + 1]

    # ... the fleet sees the world: merged confusion matrix = the sum of the four ranks' own
    fleet = ReplayedFleet([{"target": str(d), "name": d.name} for d in dirs])
    st = fleet.state
    assert st.ranks == [0, 1, 2, 3] and st.expected_ranks == 4 and st.lead_rank == 0
    n_evals = STEPS // EVAL_EVERY
    assert st.evals_total == n_evals
    mats = [np.array(json.loads((out / f"cm_rank{r}_eval{n_evals - 1}.json").read_text())) for r in range(4)]
    assert all(m.sum() > 0 for m in mats)
    assert (st.confusion == sum(mats)).all()
    assert st.evals[-1]["pixels"] == int(sum(mats).sum())
    assert {r: m.tolist() for r, m in st.rank_confusion.items()} == {r: mats[r].tolist() for r in range(4)}

    rep = fleet.report()
    f = {x["id"]: x for x in rep["findings"]}
    # the NaN on node 1, local rank 1 is named as global rank 3 on node 1
    assert f["loss.nonfinite"]["evidence"]["rank"] == 3 and f["loss.nonfinite"]["evidence"]["node"] == 1
    assert f["loss.nonfinite"]["evidence"]["ranks"] == [3]
    # no DistributedSampler: the four ranks of both nodes got the same batches
    assert f["dist.same_batches"]["evidence"]["ranks"] == 4
    assert [n["ranks"] for n in rep["fleet"]["nodes"]] == [[0, 1], [2, 3]]
    assert [r["node"] for r in rep["ranks"]["per_rank"]] == [0, 0, 1, 1]
    assert rep["status"] == "finished" and rep["exit_code"] == 0

    # replay through the CLI (two directories) = the in-process replay = the live fleet view
    code, replayed_json, err = _finish(_segwatch("report", "--json", str(dirs[0]), str(dirs[1]), cwd=tmp_path), 180)
    assert code == 0, err
    replayed = json.loads(replayed_json)
    assert replayed == json.loads(json.dumps(rep))
    live = json.loads(live_report.read_text())
    assert live == replayed, attach_err[-2000:]
    assert "merged without waiting" not in attach_err
    code, text, err = _finish(_segwatch("replay", "--headless", str(dirs[1]), str(dirs[0]), cwd=tmp_path), 180)
    assert code == 0, err
    assert "loss.nonfinite" in text and "dist.same_batches" in text


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_fleet_over_ssh_equals_local_replay(sshd, tmp_path):
    """`segwatch attach ssh://node0/... ssh://node1/...` (a real sshd on loopback, the relay at
    the other end) merges the two nodes' runs into the same report as the local replay."""
    import os

    from test_fleet import write_node_runs

    port, opts, user = sshd
    dirs = write_node_runs(tmp_path / "job", nan_rank=3)
    env = dict(_env(), SEGWATCH_SSH_OPTS=opts, SEGWATCH_REMOTE=f"{sys.executable} -m segwatch")
    live = tmp_path / "ssh.json"
    r = subprocess.run([sys.executable, "-m", "segwatch", "attach", "--headless", "--report", str(live),
                        *(f"ssh://{user}@127.0.0.1:{port}{d}" for d in dirs)],
                       capture_output=True, text=True, timeout=90, env=env, cwd=str(tmp_path))
    assert r.returncode == 0, r.stderr
    r2 = subprocess.run([sys.executable, "-m", "segwatch", "report", "--json", *map(str, dirs)],
                        capture_output=True, text=True, timeout=60, env=dict(os.environ), cwd=str(tmp_path))
    assert r2.returncode == 0, r2.stderr
    replayed = json.loads(r2.stdout)
    got = json.loads(live.read_text())
    # the targets are named as given (ssh:// addresses vs directories); everything else agrees
    assert [n["target"] for n in got["fleet"]["nodes"]] == [f"ssh://{user}@127.0.0.1:{port}{d}" for d in dirs]
    for rep in (got, replayed):
        rep.pop("run_dir")
        for n in rep["fleet"]["nodes"]:
            n.pop("target")
            n.pop("name")
    assert got == replayed
    f = {x["id"]: x for x in got["findings"]}
    assert f["loss.nonfinite"]["evidence"]["node"] == 1 and f["loss.nonfinite"]["evidence"]["rank"] == 3
