"""The shim's loader bookkeeping on real tiny trainings: epochs of next()-driven loaders
(issue 16 item 2) and the DataLoader wait of each step event (issue 19: step.data_wait /
step.wall, batch.num_workers / pin_memory)."""
from __future__ import annotations

from pathlib import Path

import pytest

from test_shim import of, run_shim

SCRIPT = Path(__file__).parent / "shim_scripts" / "train_next_driven.py"
CFG = {"dataset": {"num_classes": 4, "ignore_index": 255, "class_names": None},
       "sampling": {"overhead_budget": 0.01}}
NITERS = 5
SAMPLE_SLEEP, BATCH = 0.005, 2


def _run(tmp_path, *args):
    # debug: every step sampled, so each step's epoch can be checked
    proc, ev = run_shim(tmp_path, SCRIPT, "--niters", str(NITERS), *args, config=CFG, env={"SEGWATCH_DEBUG": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert ev[-1]["type"] == "bye" and ev[-1]["disabled"] == [], ev[-1]
    return ev


@pytest.mark.slow
@pytest.mark.parametrize("peek", [False, True])
def test_next_driven_loader_counts_epochs(tmp_path, peek):
    ev = _run(tmp_path, "--epochs", "3", *(["--peek"] if peek else []))
    bye = ev[-1]
    assert bye["backward_total"] == 3 * NITERS
    # the third pass is not followed by a new iterator: two ended passes are seen
    assert bye["epoch"] == 2, bye
    sampled = [e for e in of(ev, "step") if e.get("sampled")]
    assert {e["step"] for e in sampled} == set(range(1, 3 * NITERS + 1))
    for e in sampled:
        assert e["epoch"] == (e["step"] - 1) // NITERS, e
    train = [e for e in of(ev, "batch") if e["phase"] == "train"]
    assert max(e["index"] for e in train) == NITERS - 1   # each new iterator starts at 0


@pytest.mark.slow
def test_step_events_carry_the_training_loader_wait(tmp_path):
    ev = _run(tmp_path, "--epochs", "2")
    steps = sorted(of(ev, "step"), key=lambda e: e["step"])
    assert steps and all(e.get("cuda_mem") is None for e in steps)     # CPU training
    timed = [e for e in steps if e.get("wall") is not None]
    assert len(timed) >= len(steps) - 1, steps
    prev = None
    for e in steps:
        if e.get("wall") is not None:
            assert 0 <= e["data_wait"] <= e["wall"], e
            if prev is not None:
                # every training batch sleeps BATCH * SAMPLE_SLEEP inside __next__ (a lower bound)
                assert e["data_wait"] >= 0.9 * BATCH * SAMPLE_SLEEP * (e["step"] - prev), (prev, e)
        prev = e["step"]
    train = [e for e in of(ev, "batch") if e["phase"] == "train"]
    assert train and all(e["num_workers"] == 0 and e["pin_memory"] is False for e in train), train[:1]
    assert all("num_workers" not in e for e in of(ev, "batch") if e["phase"] == "val")
