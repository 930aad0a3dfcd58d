"""Issue 15 on real tiny trainings through the real CLI: live = replay for every finding's
evidence (a representative subset of the fault zoo), and a run that ends collapsed inside
the grace window is reported as collapsed.

Each training runs once (module cache); they are marked ``slow`` like the fault zoo.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
FAULTS = ROOT / "tests" / "faults"
SCRIPTS = ROOT / "tests" / "diag_scripts"
TABLE = yaml.safe_load((FAULTS / "EXPECTED.yaml").read_text())
pytestmark = pytest.mark.slow

#: the zoo subset: a healthy DFormer-style run, collapse seen by the matrix, the p_c / C
#: signature, the script's metric disagreeing (printed-mIoU rules)
ZOO = ["healthy_dformer.py", "fault_collapse_high_lr.py", "fault_single_class_signature.py",
       "fault_metrics_not_updated.py"]

_RUNS: dict[str, tuple[dict, Path]] = {}


def _run(script: Path, config: Path, tmp: Path) -> tuple[dict, Path]:
    key = str(script)
    if key not in _RUNS:
        report, run_dir = tmp / "r.json", tmp / "run"
        proc = subprocess.run(
            [sys.executable, "-m", "segwatch", "run", "--headless", "--report", str(report),
             "--run-dir", str(run_dir), "--config", str(config), str(script)],
            cwd=str(ROOT), capture_output=True, text=True, timeout=150)
        assert report.exists(), f"no report; rc={proc.returncode}\n{proc.stderr[-3000:]}"
        _RUNS[key] = (json.loads(report.read_text()), run_dir)
    return _RUNS[key]


def _findings(rep: dict) -> dict:
    keep = ("severity", "first_step", "last_step", "count", "phase", "evidence", "advice")
    return {f["id"]: {k: f.get(k) for k in keep} for f in rep["findings"]}


def _checklist(rep: dict) -> dict:
    return {c["id"]: (c["state"], c["evidence"]) for c in rep["checklist"]}


def _rebuilt(run_dir: Path) -> dict:
    from segwatch.supervisor.replay import Replayed

    return Replayed(run_dir).report()


@pytest.mark.timeout(200)
@pytest.mark.parametrize("name", ZOO)
def test_live_findings_equal_the_run_directory_rebuilt(name, tmp_path):
    live, run_dir = _run(FAULTS / name, FAULTS / TABLE[name]["config"], tmp_path)
    rebuilt = _rebuilt(run_dir)
    assert _findings(rebuilt) == _findings(live)
    assert _checklist(rebuilt) == _checklist(live)
    assert rebuilt["miou"] == live["miou"]
    # what the live line said when each finding was first raised (the mirrored `finding`
    # events in the run directory) is the same finding: same id, step and severity floor
    mirrored = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()
                if '"finding"' in line]
    mirrored = {e["id"]: e for e in mirrored if e.get("type") == "finding"}
    assert set(mirrored) == set(_findings(live))
    for fid, e in mirrored.items():
        assert e["first_step"] == live_first(live, fid)
    for fid in TABLE[name]["expected"]:
        assert fid in _findings(live), (name, fid, list(_findings(live)))


def live_first(rep: dict, fid: str) -> int:
    return next(f["first_step"] for f in rep["findings"] if f["id"] == fid)


@pytest.mark.timeout(200)
def test_a_short_run_that_ends_collapsed_is_collapsed(tmp_path):
    """64 steps, grace_steps 100, LR far too high: the last evaluations predict one class."""
    cfg = tmp_path / "g100.yaml"
    cfg.write_text("dataset: {name: synth13, num_classes: 13, ignore_index: -1}\npolicy: {grace_steps: 100}\n")
    live, run_dir = _run(SCRIPTS / "short_collapse.py", cfg, tmp_path)
    found = _findings(live)
    f = found["pred.collapse"]
    assert f["severity"] == "error" and f["first_step"] < 100
    assert f["evidence"]["source"] == "evaluation confusion matrix" and f["evidence"]["share"] >= 0.98
    # the checklist names the same collapse, at the last evaluation
    state, evidence = _checklist(live)["predictions_diverse"]
    assert state == "fail" and f"class {f['evidence']['class']} " in evidence
    # one evaluation printed twice is one evaluation: no p_c / C error from the script's lines
    assert found.get("metric.single_class_signature", {}).get("evidence", {}).get("source", "matrix") != \
        "script output and validation labels"
    assert _findings(_rebuilt(run_dir)) == found


@pytest.mark.timeout(200)
@pytest.mark.parametrize("healthy", [False, True])
def test_lr_set_after_step_names_the_lr_of_steps_1_and_2(healthy, tmp_path):
    """The guide's fork: LR set after optimizer.step(), so step 1 runs at the base LR and
    step 2 at 0; segwatch recorded both values and called the learning rate ok."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text("dataset: {name: synth13, num_classes: 13, ignore_index: -1}\n")
    report = tmp_path / "r.json"
    cmd = [sys.executable, "-m", "segwatch", "run", "--headless", "--report", str(report), "--run-dir",
           str(tmp_path / "run"), "--config", str(cfg), str(SCRIPTS / "lr_after_step.py")]
    if healthy:
        cmd += ["--", "--healthy"]
    proc = subprocess.run(cmd, cwd=str(ROOT), capture_output=True, text=True, timeout=150)
    assert report.exists(), proc.stderr[-2000:]
    found = _findings(json.loads(report.read_text()))
    if healthy:
        assert "optim.lr_schedule" not in found, found.get("optim.lr_schedule")
        return
    steps = [json.loads(line) for line in (tmp_path / "run" / "events.jsonl").read_text().splitlines()
             if '"step"' in line]
    early = [{k: e.get(k) for k in ("step", "lr", "lr_applied", "optimizer_steps_total")} for e in steps
             if e.get("type") == "step" and (e.get("step") or 0) <= 4]
    assert "optim.lr_schedule" in found, (early, list(found))
    e = found["optim.lr_schedule"]["evidence"]
    assert e["lr_applied_steps_1_3"][:2] == [0.01, 0.0]
    assert "after optimizer.step()" in e["why"] and found["optim.lr_schedule"]["first_step"] <= 3
