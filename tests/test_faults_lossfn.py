"""The loss as a cause, through the real CLI (``segwatch run --headless --report``) on tiny
trainings of the fault zoo: the finding names the class weight / the loss's ignore_index,
and a healthy run with class weights and an auxiliary head stays quiet."""
from __future__ import annotations

import json

import pytest
from test_faults import _describe, _run


def _finding(rep: dict, fid: str) -> dict:
    for f in rep["findings"]:
        if f["id"] == fid:
            return f
    raise AssertionError(f"{fid} not found: {_describe(rep)}")


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_class_weight_100_is_named_in_evidence_and_advice(tmp_path):
    rep, _, _ = _run("fault_class_weight_100.py", tmp_path)
    named = [f for f in rep["findings"] if f["evidence"].get("loss_cause") == "class_weight"]
    assert named, _describe(rep)
    f = named[0]
    assert f["evidence"]["loss_weight_class"] == 7 and f["evidence"]["loss_weight_class_name"] == "door"
    assert f["evidence"]["loss_weight_ratio"] == 100.0
    assert f["advice"].startswith("Likely cause: the loss (nn.CrossEntropyLoss) weights class 7 (door) 100.0x")


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_default_ignore_index_with_255_labels_is_found_before_the_crash(tmp_path):
    rep, _, proc = _run("fault_loss_ignore_default.py", tmp_path)
    assert rep["exit_code"] != 0          # "Target 255 is out of bounds"
    f = _finding(rep, "loss.ignore_index_mismatch")
    assert f["severity"] == "error" and f["first_step"] == 0
    assert f["evidence"]["loss_ignore_index"] == -100 and f["evidence"]["target_values"] == [255]
    assert "use ignore_index=255" in f["advice"]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_healthy_weighted_loss_with_an_aux_head_is_quiet_and_seen(tmp_path):
    rep, _, _ = _run("healthy_aux_weights.py", tmp_path)
    assert rep["exit_code"] == 0
    assert [f["id"] for f in rep["findings"] if f["severity"] != "info"] == [], _describe(rep)
    events = [json.loads(line) for line in (tmp_path / "run" / "events.jsonl").read_text().splitlines()
              if '"lossfn"' in line]
    last = [e for e in events if e["type"] == "lossfn"][-1]
    assert last["calls_per_step"] == 2 and last["output"] == {"kind": "dict", "keys": ["out", "aux"]}
    assert [c["fn"] for c in last["calls"]] == ["F.cross_entropy", "F.cross_entropy"]
    assert 1.0 < last["calls"][0]["weight"]["ratio"] < 20
