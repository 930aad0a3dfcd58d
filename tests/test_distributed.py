"""Distributed training through torchrun: ``segwatch run --nproc 2`` on 2 CPU ranks (gloo, DDP).

The training is tests/dist_scripts/train_ddp.py; each rank writes its own confusion matrix
per evaluation, so the merged matrix can be checked against the ranks' own.
Fast unit tests of the merge, the command line and the command built come first.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from segwatch.core.state import RunState
from test_supervisor_fake import kill_tree

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "dist_scripts" / "train_ddp.py"
CFG = "dataset: {num_classes: 4, ignore_index: 255}\npolicy: {grace_steps: 5}\n"


# --------------------------------------------------------------------------- helpers
def _ev(type_, rank, ws=2, t=None, **kw):
    return {"v": 1, "type": type_, "t": t if t is not None else time.time(), "rank": rank, "world_size": ws, **kw}


def read_events(run_dir: Path) -> list[dict]:
    out = []
    try:
        with open(Path(run_dir) / "events.jsonl") as fh:
            for line in fh:
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass   # a line being written
    except FileNotFoundError:
        pass
    return out


def wait_for(pred, timeout: float = 30.0, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(interval)
    raise AssertionError("timed out waiting")


def replay_state(run_dir: Path) -> RunState:
    st = RunState()
    st.ingest_many(read_events(run_dir))
    return st


def child_env() -> dict:
    """This checkout's segwatch first on the path (the runs start in tmp_path, where an
    editable install elsewhere would otherwise win)."""
    root = str(HERE.parent)
    pp = os.environ.get("PYTHONPATH", "")
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=root + (os.pathsep + pp if pp else ""))


def launch(tmp_path: Path, *script_args: str, debug: bool = True) -> tuple[subprocess.Popen, Path, Path]:
    run_dir = tmp_path / "run"
    out = tmp_path / "out"
    out.mkdir()
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(CFG)
    cmd = [sys.executable, "-m", "segwatch", "run", "--nproc", "2", "--headless", "--run-dir", str(run_dir),
           "--config", str(cfg), *(["--debug"] if debug else []), str(SCRIPT), "--", "--out", str(out),
           *script_args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=child_env(), cwd=str(tmp_path))
    return proc, run_dir, out


def finish(proc: subprocess.Popen, timeout: float = 240) -> tuple[int, str, str]:
    try:
        o, e = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_tree(proc)
        o, e = proc.communicate()
        raise AssertionError(f"segwatch did not end:\n{e.decode()[-3000:]}")
    return proc.returncode, o.decode(), e.decode()


# --------------------------------------------------------------------------- core (fast)
def test_eval_of_all_ranks_merged_into_one_matrix():
    st = RunState()
    m0 = [[5, 1], [0, 4]]
    m1 = [[2, 0], [3, 6]]
    st.ingest(_ev("hello", 0, pid=1))
    st.ingest(_ev("eval", 0, step=10, index=0, num_classes=2, matrix=m0, pixels=10, batches=2))
    assert st.evals_total == 0 and st.confusion is None      # waits for rank 1
    st.ingest(_ev("eval", 1, step=10, index=0, num_classes=2, matrix=m1, pixels=11, batches=2))
    assert st.evals_total == 1
    assert (st.confusion == np.array(m0) + np.array(m1)).all()
    assert st.evals[-1]["pixels"] == 21 and st.evals[-1]["batches"] == 4
    assert {r: m.tolist() for r, m in st.rank_confusion.items()} == {0: m0, 1: m1}
    assert len(st.miou) == 1


def test_eval_of_rank0_only_is_flushed_when_training_goes_on():
    st = RunState()
    st.ingest(_ev("eval", 0, step=10, index=0, num_classes=2, matrix=[[1, 0], [0, 1]]))
    st.ingest(_ev("step", 1, step=11, loss=1.0))
    assert st.evals_total == 0
    st.ingest(_ev("step", 1, step=12, loss=1.0))
    assert st.evals_total == 1 and st.confusion.tolist() == [[1, 0], [0, 1]]
    st2 = RunState()
    st2.ingest(_ev("eval", 0, step=10, index=0, num_classes=2, matrix=[[1, 0], [0, 1]]))
    st2.ingest({"v": 1, "type": "status", "t": time.time(), "status": "finished", "exit_code": 0})
    assert st2.evals_total == 1


def test_per_rank_series_histograms_and_report():
    st = RunState()
    for s in range(1, 4):
        st.ingest(_ev("step", 0, step=s, loss=1.0, grad_norm=2.0))
        st.ingest(_ev("step", 1, step=s, loss=3.0, grad_norm=2.0))
    st.ingest(_ev("batch", 0, step=3, phase="train", labels={"hist": [1, 2], "total": 3}))
    st.ingest(_ev("batch", 1, step=3, phase="train", labels={"hist": [4, 0], "total": 4}))
    st.ingest(_ev("preds", 0, step=3, phase="train", hist=[3, 0]))
    st.ingest(_ev("preds", 1, step=3, phase="train", hist=[1, 3]))
    assert st.rank_loss[1].values().tolist() == [3.0, 3.0, 3.0]
    assert st.loss.values().tolist() == [1.0, 1.0, 1.0]          # rank 0 drives the main series
    assert st.rank_grad_norm[0].last_value() == 2.0
    assert st.label_hist.tolist() == [5, 2]
    assert st.pred_hist_merged.tolist() == [4, 3]
    rep = st.report()
    assert rep["ranks"]["world_size"] == 2
    assert [r["loss"] for r in rep["ranks"]["per_rank"]] == [1.0, 3.0]
    assert "ranks" not in RunState().report()                    # single process: unchanged


def test_nonfinite_on_one_rank_names_it_and_loss_divergence():
    st = RunState()
    st.ingest(_ev("step", 0, step=1, loss=1.0))
    st.ingest(_ev("step", 1, step=1, loss="nan", loss_nonfinite_total=1))
    f = st.findings["loss.nonfinite"]
    assert f.evidence["rank"] == 1 and f.evidence["ranks"] == [1]
    st = RunState()
    for s in range(1, 20):
        st.ingest(_ev("step", 0, step=s, loss=0.5))
        st.ingest(_ev("step", 1, step=s, loss=5.0))
    f = st.findings["dist.rank_divergence"]
    assert f.evidence["kind"] == "loss" and f.evidence["ratio"] == 10.0


def test_rank_silent_seen_from_any_rank():
    st = RunState()
    t = 1000.0
    st.ingest(_ev("step", 0, step=1, t=t))
    st.ingest(_ev("step", 1, step=1, t=t))
    for s in range(2, 5):
        st.ingest(_ev("step", 1, step=s, t=t + 100 * s))   # rank 0 hangs, rank 1 reports
    f = st.findings["dist.rank_silent"]
    assert f.evidence["rank"] == 0 and f.evidence["reporting_rank"] == 1


def test_all_ranks_silent_seen_at_proc_samples_not_while_paused():
    def proc(t):
        return {"v": 1, "type": "proc", "t": t, "cpu": 0.0, "rss": 1, "procs": 3}

    def run(paused: bool) -> RunState:
        st = RunState()
        t = 1000.0
        for s in range(1, 6):
            st.ingest(_ev("step", 0, step=s, t=t + s))
            st.ingest(_ev("step", 1, step=s, t=t + s + 0.5 if s < 5 else t + 4.7))
        if paused:
            st.ingest({"v": 1, "type": "action", "t": t + 10, "kind": "pause", "by": "user"})
        for k in range(1, 40):
            st.ingest(proc(t + 10 * k))
        return st

    f = run(False).findings["dist.rank_silent"]
    assert f.evidence["all_silent"] is True and f.evidence["rank"] == 1   # rank 1's last event is oldest
    assert "dist.rank_silent" not in run(True).findings


# --------------------------------------------------------------------------- CLI and command (fast)
def test_torchrun_command_and_usage_errors(tmp_path):
    from segwatch.cli import main
    from segwatch.supervisor.dist import DistSpec, torchrun_command

    cmd = torchrun_command(DistSpec(nproc=2), "train.py", ["--lr", "1"])
    assert cmd[1:3] == ["-m", "torch.distributed.run"]
    assert cmd[cmd.index("--nproc_per_node") + 1] == "2"
    # one node, no port given: torchrun's store binds port 0 itself (no port picked and released)
    assert "--standalone" in cmd and "--master_port" not in cmd
    assert cmd[cmd.index("--local_addr") + 1] == "127.0.0.1"
    from segwatch.supervisor.dist import free_port
    assert all(0 < free_port() < 65536 for _ in range(3))
    assert cmd[-5:] == ["-m", "segwatch.shim", "train.py", "--lr", "1"]
    multi = torchrun_command(DistSpec(nproc=4, nnodes=2, node_rank=1, master_addr="10.0.0.1", master_port=29500),
                             "t.py", [])
    assert multi[multi.index("--node_rank") + 1] == "1" and multi[multi.index("--master_addr") + 1] == "10.0.0.1"
    script = tmp_path / "t.py"
    script.write_text("pass\n")
    rd = tmp_path / "rd"
    assert main(["run", "--nnodes", "2", "--run-dir", str(rd), str(script)]) == 2   # needs --master-addr/port
    assert main(["run", "--nproc", "0", "--run-dir", str(rd), str(script)]) == 2
    assert main(["run", "--nnodes", "2", "--node-rank", "2", "--master-addr", "h", "--master-port", "1",
                 "--run-dir", str(rd), str(script)]) == 2
    assert not (rd / "meta.json").exists()


# --------------------------------------------------------------------------- real runs (2 ranks, gloo)
needs_torch = pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch is not installed")


@pytest.mark.slow
@needs_torch
@pytest.mark.timeout(300)
def test_two_ranks_merged_matrix_equals_sum_of_ranks(tmp_path):
    proc, run_dir, out = launch(tmp_path, debug=False)       # default sampling
    code, _, err = finish(proc)
    assert code == 0, err[-3000:]
    rep = json.loads((run_dir / "report.json").read_text())
    st = replay_state(run_dir)
    assert st.world_size == 2 and st.ranks == [0, 1]
    assert st.evals_total == 2
    for i in range(2):
        mats = [np.array(json.loads((out / f"cm_rank{r}_eval{i}.json").read_text())) for r in (0, 1)]
        assert mats[0].sum() > 0 and mats[1].sum() > 0 and not (mats[0] == mats[1]).all()
        # every rank's own eval event is its own matrix ...
        evs = [e for e in read_events(run_dir) if e["type"] == "eval" and e.get("index") == i]
        assert {e["rank"]: e["matrix"] for e in evs} == {0: mats[0].tolist(), 1: mats[1].tolist()}
    # ... and segwatch's evaluation is their sum
    assert (st.confusion == mats[0] + mats[1]).all()
    assert st.evals[-1]["pixels"] == int((mats[0] + mats[1]).sum())
    assert len(rep["miou"]) == 2
    # per-rank series; the report covers both ranks
    assert len(st.rank_loss[0]) > 0 and len(st.rank_loss[1]) > 0
    assert [r["rank"] for r in rep["ranks"]["per_rank"]] == [0, 1]
    assert all(r["bye"] == "finished" for r in rep["ranks"]["per_rank"])
    ids = {f["id"] for f in rep["findings"]}
    assert not ids & {"dist.same_batches", "dist.rank_divergence", "dist.rank_silent", "loss.nonfinite"}, ids
    assert rep["supervisor"]["protocol"]["foreign"] == 0       # the ranks passed the peer check
    assert "loss by rank 0:" in err and " 1:" in err           # headless: the ranks' losses


@pytest.mark.slow
@needs_torch
@pytest.mark.timeout(300)
def test_same_batches_and_nan_on_rank1_found(tmp_path):
    # default sampling: every probe samples every step of the first 20 (the sampler's warm-up)
    # on every rank, so the ranks' batches of the same step can be compared
    proc, run_dir, _ = launch(tmp_path, "--fault", "same_batches,nan_rank1", debug=False)
    code, _, err = finish(proc)
    assert code == 0, err[-3000:]
    rep = json.loads((run_dir / "report.json").read_text())
    f = {x["id"]: x for x in rep["findings"]}
    assert "dist.same_batches" in f, list(f)
    assert f["dist.same_batches"]["evidence"]["ranks"] == 2
    assert "loss.nonfinite" in f
    assert f["loss.nonfinite"]["evidence"]["rank"] == 1
    assert f["loss.nonfinite"]["evidence"]["ranks"] == [1]
    assert rep["ranks"]["per_rank"][1]["loss_nonfinite_total"] == 1
    assert rep["ranks"]["per_rank"][0]["loss_nonfinite_total"] == 0
    assert "dist.same_batches" in err and "loss.nonfinite" in err
    # replay of the interleaved events of both ranks rebuilds the live report whole
    from segwatch.supervisor.replay import Replayed, format_text

    assert Replayed(str(run_dir)).report() == rep
    text = format_text(rep)
    assert "rank 1: step" in text and "non-finite losses 1" in text


def _steps_by_rank(run_dir: Path) -> dict[int, int]:
    n: dict[int, int] = {0: 0, 1: 0}
    for e in read_events(run_dir):
        if e["type"] == "step":
            n[e["rank"]] = max(n[e["rank"]], e["step"])
    return n


def _notes(run_dir: Path, word: str) -> set[int]:
    return {e["rank"] for e in read_events(run_dir)
            if e["type"] == "probe" and e.get("name") == "pause" and word in (e.get("message") or "")}


@pytest.mark.slow
@needs_torch
@pytest.mark.timeout(420)
def test_cooperative_pause_resume_and_kill_leave_nothing(tmp_path):
    import psutil

    from segwatch.supervisor import RunClient

    proc, run_dir, _ = launch(tmp_path, "--steps", "100000", "--eval-every", "1000000", "--sleep", "0.02")
    try:
        # (the waits are bounds for a loaded 2-core CI machine, where torchrun and three
        # torch imports alone can take a minute; each returns as soon as its condition holds)
        wait_for(lambda: min(_steps_by_rank(run_dir).values()) >= 10, timeout=180)
        sup = psutil.Process(proc.pid)
        tree = {p.pid for p in sup.children(recursive=True)}
        assert len(tree) >= 3          # torchrun and 2 ranks
        client = RunClient(run_dir)
        try:
            assert client.control("pause")["ok"]
            assert (run_dir / "pause").exists()
            wait_for(lambda: _notes(run_dir, "paused") == {0, 1}, timeout=60)
            # both at the boundary of the same (agreed) step: neither waits inside a collective
            at = {e["rank"]: e["step"] for e in read_events(run_dir) if e["type"] == "probe"
                  and e.get("name") == "pause" and "paused" in e.get("message", "")}
            assert at[0] == at[1], at
            time.sleep(0.5)
            before = _steps_by_rank(run_dir)
            time.sleep(2.0)
            assert _steps_by_rank(run_dir) == before          # no rank advances
            # cooperative: the ranks wait (sleeping), nobody was SIGSTOPped
            for pid in tree:
                try:
                    assert psutil.Process(pid).status() != psutil.STATUS_STOPPED
                except psutil.NoSuchProcess:
                    pass
            assert client.control("resume")["ok"]
            assert not (run_dir / "pause").exists()
            wait_for(lambda: all(v >= before[r] + 5 for r, v in _steps_by_rank(run_dir).items()), timeout=60)
            assert _notes(run_dir, "resumed") == {0, 1}
            tree |= {p.pid for p in sup.children(recursive=True)}
            # paused again, then killed while every rank waits
            assert client.control("pause")["ok"]
            wait_for(lambda: len([e for e in read_events(run_dir) if e["type"] == "probe"
                                  and e.get("name") == "pause" and "paused at" in e.get("message", "")]) >= 4,
                     timeout=60)
            assert client.control("kill")["ok"]
        finally:
            client.close()
        code, _, err = finish(proc, timeout=60)
        assert code != 0
        meta = json.loads((run_dir / "meta.json").read_text())
        assert meta["status"] == "killed"
        gone = wait_for(lambda: all(not psutil.pid_exists(p) or psutil.Process(p).status() == psutil.STATUS_ZOMBIE
                                    for p in tree), timeout=30)
        assert gone
        kinds = [e["kind"] for e in read_events(run_dir) if e["type"] == "action"]
        assert kinds == ["pause", "resume", "pause", "kill"]
        assert "cooperative pause" in err
        assert not (run_dir / "pause").exists()
    finally:
        kill_tree(proc)


@pytest.mark.slow
@needs_torch
@pytest.mark.timeout(300)
def test_two_nodes_on_one_machine_each_with_its_own_supervisor(tmp_path):
    """--nnodes 2: one segwatch (supervisor) per node, 1 rank each, static rendezvous on
    loopback; each node records and diagnoses its own ranks (node 1's main series are rank
    1's), and a viewer attaches to each run directory."""
    from segwatch.supervisor import RunClient
    from segwatch.supervisor.dist import free_port

    port = str(free_port())
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(CFG)
    out = tmp_path / "out"
    out.mkdir()
    procs = []
    for node in (0, 1):
        cmd = [sys.executable, "-m", "segwatch", "run", "--nproc", "1", "--nnodes", "2", "--node-rank", str(node),
               "--master-addr", "127.0.0.1", "--master-port", port, "--headless", "--debug",
               "--run-dir", str(tmp_path / f"node{node}"), "--config", str(cfg), str(SCRIPT), "--",
               "--out", str(out)]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=str(tmp_path),
                                      env=child_env()))
    results = [finish(p, timeout=240) for p in procs]
    for code, _, err in results:
        assert code == 0, err[-3000:]
    for node in (0, 1):
        run_dir = tmp_path / f"node{node}"
        rep = json.loads((run_dir / "report.json").read_text())
        assert rep["ranks"]["world_size"] == 2 and rep["ranks"]["reporting_here"] == 1
        assert rep["ranks"]["lead_rank"] == node
        seen = [r["rank"] for r in rep["ranks"]["per_rank"] if r["seen"]]
        assert seen == [node]
        st = replay_state(run_dir)
        assert len(st.loss) > 0 and st.evals_total == 2       # this node's rank drives its view
        mat = np.array(json.loads((out / f"cm_rank{node}_eval1.json").read_text()))
        assert (st.confusion == mat).all()                     # this node's part of the evaluation
        assert not {f["id"] for f in rep["findings"]} & {"dist.same_batches", "dist.rank_divergence"}
        client = RunClient(run_dir)                            # `segwatch attach` on each node's run
        try:
            evs = list(client.events(follow=False))
        finally:
            client.close()
        assert {e.get("rank") for e in evs if e.get("type") == "step"} == {node}
