"""The fleet view (issue 18 item 2): several nodes' event streams merged into one state.

Fast tests on in-memory events: 2 nodes x 2 ranks (global ranks 0,1 on node 0 and 2,3 on
node 1), as each node's supervisor records them.
"""
from __future__ import annotations

import random

import numpy as np
import pytest

from segwatch.fleet import FleetState, StreamMerger, merge_node_events

WS = 4


def ev(type_, rank, t, **kw):
    return {"v": 1, "type": type_, "t": float(t), "rank": rank, "world_size": WS, **kw}


def hello(rank, t):
    return ev("hello", rank, t, local_rank=rank % 2, local_world_size=2, pid=100 + rank)


def status(t, st, code=None):
    return {"v": 1, "type": "status", "t": float(t), "status": st, "exit_code": code}


MATS = {r: [[5 + r, r], [2 * r, 7]] for r in range(WS)}


def node_events(node: int, nan_rank: int | None = None, same_batches: bool = False) -> list[dict]:
    """One node's run directory: its two ranks' events, interleaved in arrival order."""
    ranks = (2 * node, 2 * node + 1)
    out = [status(0.0 + node * 0.01, "starting"), status(0.5 + node * 0.01, "running")]
    out += [hello(r, 1.0 + 0.1 * r) for r in ranks]
    for s in range(1, 21):
        for r in ranks:
            t = 2.0 + s + 0.01 * r
            loss = float("nan") if (r == nan_rank and s == 5) else 1.0 / s + 0.01 * r
            out.append(ev("step", r, t, step=s, loss=loss, grad_norm=2.0,
                          loss_nonfinite_total=int(r == nan_rank and s >= 5)))
            hist = [10, 6] if same_batches else [10 + r, 6 - r]
            out.append(ev("batch", r, t + 0.001, step=s, index=0, phase="train",
                          labels={"hist": hist, "total": 16}, inputs=[{"mean": 0.5 if same_batches else 0.1 * r}]))
        if s == 10:
            for r in ranks:
                out.append(ev("eval", r, 2.0 + s + 0.5 + 0.01 * r, step=s, index=0, num_classes=2,
                              matrix=MATS[r], pixels=int(np.sum(MATS[r])), batches=1))
    out += [ev("bye", r, 40.0 + 0.01 * r, step=20, reason="finished") for r in ranks]
    out.append(status(41.0 + node * 0.01, "finished", 0))
    return out


NODES = [{"name": "node0", "node_rank": 0}, {"name": "node1", "node_rank": 1}]


def fleet_state(streams) -> FleetState:
    st = FleetState(nodes=NODES)
    for e in merge_node_events(streams):
        st.ingest(e)
    return st


def test_world_merge_matrix_histograms_and_global_ranks():
    st = fleet_state([node_events(0), node_events(1)])
    assert st.ranks == [0, 1, 2, 3] and st.world_size == 4 and st.expected_ranks == 4
    assert st.lead_rank == 0
    assert st.evals_total == 1
    assert (st.confusion == sum(np.array(MATS[r]) for r in range(WS))).all()
    assert st.evals[-1]["pixels"] == sum(int(np.sum(m)) for m in MATS.values())
    # label histograms of every rank of every node
    assert st.label_hist.tolist() == [20 * sum(10 + r for r in range(WS)), 20 * sum(6 - r for r in range(WS))]
    assert st.node_of_rank == {0: 0, 1: 0, 2: 1, 3: 1}
    assert st.status == "finished" and st.exit_code == 0
    rep = st.report()
    assert [r["node"] for r in rep["ranks"]["per_rank"]] == [0, 0, 1, 1]
    assert [n["ranks"] for n in rep["fleet"]["nodes"]] == [[0, 1], [2, 3]]
    assert not {"dist.same_batches", "dist.rank_divergence", "dist.rank_silent", "loss.nonfinite"} & set(st.findings)


def test_nan_on_node1_local_rank1_is_global_rank3_on_node1():
    st = fleet_state([node_events(0), node_events(1, nan_rank=3)])
    f = st.findings["loss.nonfinite"]
    assert f.evidence["rank"] == 3 and f.evidence["node"] == 1
    assert f.evidence["ranks"] == [3] and f.evidence["nodes"] == [1]
    assert st.report()["findings"][0]["evidence"]["node"] == 1 or any(
        x["id"] == "loss.nonfinite" and x["evidence"]["node"] == 1 for x in st.report()["findings"])


def test_same_batches_across_nodes_and_not_when_ranks_differ():
    a, b = node_events(0, same_batches=True), node_events(1, same_batches=True)
    st = fleet_state([a, b])
    assert st.findings["dist.same_batches"].evidence["ranks"] == 4
    a2 = node_events(0)
    b2 = node_events(1)
    for e in a2 + b2:    # node 0's ranks get node 1's batches: same across nodes, not within
        if e["type"] == "batch":
            e["labels"]["hist"] = [10 + e["rank"] % 2, 6 - e["rank"] % 2]
            e["inputs"] = [{"mean": 0.1 * (e["rank"] % 2)}]
    st2 = fleet_state([a2, b2])
    assert "dist.same_batches" not in st2.findings


def test_divergence_between_nodes():
    a, b = node_events(0), node_events(1)
    for e in b:
        if e["type"] == "step":
            e["grad_norm"] = 3.0          # node 1's gradients are not synchronized with node 0's
    st = fleet_state([a, b])
    f = st.findings["dist.rank_divergence"]
    assert f.evidence["kind"] == "grad_norm" and set(f.evidence["grad_norm_by_rank"]) == {"0", "1", "2", "3"}


def test_rank_silent_on_another_node_is_named_with_its_node():
    a = [e for e in node_events(0) if e["type"] not in ("bye", "status")]
    b = [e for e in node_events(1) if e["type"] not in ("bye", "status")
         and not (e.get("rank") == 2 and e.get("step", 0) > 3)]     # rank 2 (node 1) hangs after step 3
    a += [ev("step", r, 300.0 + 0.01 * r, step=21, loss=0.1, grad_norm=2.0) for r in (0, 1)]
    b += [ev("step", 3, 300.03, step=21, loss=0.1, grad_norm=2.0)]
    st = fleet_state([a, b])
    f = st.findings["dist.rank_silent"]
    assert f.evidence["rank"] == 2 and f.evidence["node"] == 1


def test_merge_is_deterministic_and_keeps_each_nodes_order():
    a, b = node_events(0), node_events(1)
    a[5]["t"] = 1e9     # a late clock inside node 0's sequence must not move its event
    merged = list(merge_node_events([[dict(e) for e in a], [dict(e) for e in b]]))
    assert [e for e in merged if e["node"] == 0] == [dict(e, node=0) for e in a]
    assert [e for e in merged if e["node"] == 1] == [dict(e, node=1) for e in b]
    again = list(merge_node_events([[dict(e) for e in a], [dict(e) for e in b]]))
    assert merged == again


def test_live_merger_with_any_arrival_pattern_equals_replay():
    a, b = node_events(0, nan_rank=3), node_events(1, nan_rank=3)
    replay = list(merge_node_events([[dict(e) for e in a], [dict(e) for e in b]]))
    rng = random.Random(0)
    for _ in range(5):
        m = StreamMerger(2, hold_s=None)
        qa, qb = [dict(e) for e in a], [dict(e) for e in b]
        out = []
        while qa or qb:
            src = rng.choice([q for q in (qa, qb) if q])
            k = rng.randint(1, 30)
            chunk, src[:] = src[:k], src[k:]
            m.push(0 if src is qa else 1, chunk)
            if not qa:
                m.finish(0)
            if not qb:
                m.finish(1)
            out.extend(m.drain())
        m.finish(0)
        m.finish(1)
        out.extend(m.drain())
        assert out == replay


def test_fleet_status_is_final_when_every_node_is():
    st = FleetState(nodes=NODES)
    st.ingest(dict(status(1, "running"), node=0))
    st.ingest(dict(status(1, "running"), node=1))
    st.ingest(dict(status(2, "finished", 0), node=0))
    assert st.status == "running"
    st.ingest(dict(status(3, "failed", 1), node=1))
    assert st.status == "failed" and st.exit_code == 1
    assert st.node_status == {0: "finished", 1: "failed"}


def test_fleet_imports_without_torch_or_textual():
    """The fleet view runs on a login node or laptop: no torch, and no textual in the package."""
    import subprocess
    import sys

    code = ("import sys; sys.modules['torch'] = None; sys.modules['textual'] = None\n"
            "import segwatch.fleet, segwatch.fleet.sources, segwatch.fleet.targets, segwatch.fleet.cli\n"
            "print('ok')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr


def test_targets_globs_and_fleet_file(tmp_path):
    from segwatch.fleet.targets import FleetError, fleet_nodes

    for k in (1, 0):
        (tmp_path / "job" / f"node{k}").mkdir(parents=True)
    nodes = fleet_nodes([str(tmp_path / "job" / "node*")])
    assert [n["name"] for n in nodes] == ["node0", "node1"]
    ff = tmp_path / "fleet.yaml"
    ff.write_text("nodes:\n  - job/node1\n  - {target: ssh://host0/runs/exp-node0, name: first}\n")
    nodes = fleet_nodes([], str(ff))
    assert nodes == [{"target": str(tmp_path / "job" / "node1"), "name": "node1"},
                     {"target": "ssh://host0/runs/exp-node0", "name": "first"}]
    ff.write_text("nodes: 3\n")
    with pytest.raises(FleetError, match="list of targets"):
        fleet_nodes([], str(ff))
    with pytest.raises(FleetError, match="no run directory matches"):
        fleet_nodes([str(tmp_path / "nothing*")])


# --------------------------------------------------------------------------- recorded nodes, CLI
def write_node_runs(base, nan_rank=None) -> list:
    """Two finished run directories as two nodes' supervisors leave them (written through the
    runs layer's write side), each with its node rank in meta.json."""
    from segwatch.runs import RunStore

    dirs = []
    for k in (0, 1):
        store = RunStore(base / f"node{k}")
        for e in node_events(k, nan_rank=nan_rank):
            store.append(e)
        store.write_meta(status="finished", exit_code=0, script="train.py", lang="en",
                         dist={"nproc": 2, "nnodes": 2, "node_rank": k})
        store.close()
        dirs.append(base / f"node{k}")
    return dirs


def _cli(*args, cwd=None, env=None):
    import os
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "segwatch", *args], capture_output=True, text=True,
                          timeout=120, cwd=cwd, env=env or dict(os.environ))


@pytest.mark.slow
def test_attach_report_and_replay_of_recorded_nodes_agree(tmp_path):
    import json

    dirs = write_node_runs(tmp_path / "job", nan_rank=3)
    live = tmp_path / "attach.json"
    # nodes given in reverse order: the merge follows the node ranks of meta.json
    r = _cli("attach", "--headless", "--report", str(live), str(dirs[1]), str(dirs[0]))
    assert r.returncode == 0, r.stderr
    assert "fleet of 2 nodes" in r.stderr and "loss.nonfinite" in r.stderr
    r = _cli("report", "--json", str(tmp_path / "job" / "node*"))
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert json.loads(live.read_text()) == rep
    f = {x["id"]: x for x in rep["findings"]}
    assert f["loss.nonfinite"]["evidence"]["rank"] == 3 and f["loss.nonfinite"]["evidence"]["node"] == 1
    assert [n["node"] for n in rep["fleet"]["nodes"]] == [0, 1]
    ff = tmp_path / "fleet.yaml"
    ff.write_text("- job/node1\n- job/node0\n")
    r = _cli("replay", "--headless", "--fleet", str(ff))
    assert r.returncode == 0 and "loss.nonfinite" in r.stdout and "loss by rank 0:" in r.stdout, r.stderr
    r = _cli("report", str(dirs[0]), str(tmp_path / "nope"))
    assert r.returncode == 2 and "no run directory" in r.stderr


def test_live_merger_waits_for_a_quiet_node_then_goes_on_without_it():
    a = [ev("step", 0, t, step=t) for t in (1, 2, 3)]
    m = StreamMerger(2, hold_s=3600.0)
    m.push(0, [dict(e) for e in a])
    assert m.drain() == []                         # node 1 may still send an earlier event
    m.push(1, [ev("step", 2, 1.5, step=1)])
    assert [(e["node"], e["t"]) for e in m.drain()] == [(0, 1.0), (1, 1.5)]
    m.hold_s = 0.0                                 # node 1 stays quiet past the hold: go on
    assert [e["t"] for e in m.drain()] == [2.0, 3.0] and m.released_early == 2


def test_replayed_fleet_reads_recorded_nodes_through_the_runs_layer(tmp_path):
    """In process (the fast set): ReplayedFleet of two recorded nodes, and the report's text."""
    from segwatch.fleet.cli import fleet_text
    from segwatch.fleet.sources import ReplayedFleet

    dirs = write_node_runs(tmp_path, nan_rank=3)
    rep = ReplayedFleet([{"target": str(d), "name": d.name} for d in reversed(dirs)])
    assert [n["node_rank"] for n in rep.nodes] == [0, 1]          # ordered by meta.json's node rank
    assert rep.events == len(node_events(0)) + len(node_events(1)) and rep.invalid == 0
    assert rep.status == "finished"
    assert rep.state.findings["loss.nonfinite"].evidence["node"] == 1
    out = rep.report()
    assert out["run_dir"] == f"{dirs[0]} {dirs[1]}" and out["exit_code"] == 0
    text = fleet_text(out)
    assert "node 1 node1: finished (exit 0), ranks [2, 3]" in text
    zh = fleet_text(out, "zh")        # the node table in the report's language too
    assert "集群（2 个节点）" in zh and "节点 1 node1" in zh and "rank [2, 3]" in zh and "finished" not in zh
