"""The runs layer's API (segwatch/runs/): what the supervisor writes, RunDir reads back in
the same order; RunTail follows a growing directory; list_runs summarises a directory of runs."""
from __future__ import annotations

import os
import time

import pytest

from segwatch.protocol import make_event
from segwatch.runs import RunDir, RunStore, list_runs, load_report, replay_state


def _step(i: int, loss: float) -> dict:
    return make_event("step", step=i, loss=loss)


def test_rundir_reads_what_runstore_wrote(tmp_path):
    store = RunStore(tmp_path / "run")
    store.write_meta(status="running", script="train.py", supervisor_pid=os.getpid(), started=time.time())
    written = [make_event("hello", pid=1, script="train.py")] + [_step(i, 1.0 / i) for i in range(1, 6)]
    for ev in written:
        store.append(ev)
    store.log_output("stdout", b"epoch 1\n")
    store.close()

    run = RunDir(tmp_path / "run")
    assert run.name == "run" and run.has_run() and run.has_meta()
    assert run.meta()["script"] == "train.py"
    assert run.status() == "running"          # its supervisor (this process) is alive
    got = list(run.events())
    assert [e["type"] for e in got] == [e["type"] for e in written]
    assert [e.get("step") for e in got if e["type"] == "step"] == [1, 2, 3, 4, 5]
    assert run.read_log("stdout") == b"epoch 1\n"
    assert run.read_log("stderr") is None
    assert run.read_report() is None
    with pytest.raises(ValueError):
        run.read_log("../meta")
    with pytest.raises(FileNotFoundError):
        RunDir(tmp_path / "missing")
    state = replay_state(run.path)
    assert state.step == 5


def test_tail_follows_a_growing_run_until_its_final_status(tmp_path):
    store = RunStore(tmp_path / "run")
    store.write_meta(status="running", supervisor_pid=os.getpid(), started=time.time())
    tail = RunDir(tmp_path / "run").tail()
    assert tail.poll(100) == [] and not tail.final      # no events.jsonl yet
    for i in range(1, 4):
        store.append(_step(i, 1.0))
    first = tail.poll(100)
    assert [e["step"] for e in first] == [1, 2, 3]
    assert tail.poll(100) == []                          # nothing new
    store.append(_step(4, 0.5))
    store.append(make_event("status", status="finished", exit_code=0))
    rest = tail.poll(100)
    assert [e["type"] for e in rest] == ["step", "status"] and tail.final
    tail.close()
    store.close()


def test_tail_says_lost_when_the_supervisor_is_gone(tmp_path):
    store = RunStore(tmp_path / "run")
    # a pid that is not running: a supervisor that died without a final status
    store.write_meta(status="running", supervisor_pid=2 ** 22 + 12345, started=0.0)
    store.append(_step(1, 1.0))
    store.close()
    tail = RunDir(tmp_path / "run").tail()
    got = tail.poll(100) + tail.poll(100)
    assert [e["type"] for e in got] == ["step", "status"] and got[-1]["status"] == "lost"


def test_list_runs_summarises_each_run(tmp_path):
    for name, losses, status in (("a", [1.0, 0.5], "finished"), ("b", [2.0], "failed")):
        store = RunStore(tmp_path / name)
        store.write_meta(status=status, script="train.py")
        for i, loss in enumerate(losses, 1):
            store.append(_step(i, loss))
        store.append(make_event("status", status=status, exit_code=0 if status == "finished" else 1))
        store.close()
    (tmp_path / "not-a-run").mkdir()
    (tmp_path / "stray.txt").write_text("x")
    rows = list_runs(tmp_path)
    assert [(r.name, r.status, r.steps) for r in rows] == [("a", "finished", 2), ("b", "failed", 1)]
    assert load_report(tmp_path / "a")["steps"] == 2
    assert list_runs(tmp_path / "nowhere") == []
