"""A DFormer-style RGB-D training (tests/realistic/dformer_style/) through the real CLI:
healthy, it is quiet; with the ``gt - 1`` label shift forgotten, segwatch names the labels
out of range before CrossEntropy crashes on them; with ``num_classes`` left at 13 in the
config of a 10-class dataset it names the head's 13 channels; no report contradicts its own
confusion matrices.  See dformer_style/train.py for the shape it copies."""
from __future__ import annotations

import numpy as np
import pytest

from _common import HERE, run_cli

SCRIPT = HERE / "dformer_style" / "train.py"
CONFIG = HERE / "dformer_style" / "segwatch.yaml"
EPOCHS, ITERS_PER_EPOCH = 3, 13
EVAL_IMAGES, EVAL_HW, PADDED_HW = 6, (53, 73), (56, 80)


def _healthy_checks(run):
    rep = run.report
    assert run.rc == 0 and rep["exit_code"] == 0, run.stderr[-3000:]
    assert rep["steps"] == EPOCHS * ITERS_PER_EPOCH
    # DFormer writes the LR into the param groups after optimizer.step(), so its first
    # update runs at the base LR before the warm-up: segwatch's optim.lr_schedule says so at
    # info level (a true observation of this loop, not a fault of the run).  Nothing is raised
    # at warning or error level.
    assert not run.severe(), f"healthy run raised: {run.describe()}"
    lr = [f for f in rep["findings"] if f["id"] == "optim.lr_schedule"]
    assert len(lr) == 1 and lr[0]["severity"] == "info", lr
    assert "after optimizer.step()" in lr[0]["evidence"]["why"], lr
    checklist = {c["id"]: c for c in rep["checklist"]}
    assert checklist["num_classes"]["state"] == "ok", checklist["num_classes"]
    assert checklist["ignore_label"]["state"] == "ok", checklist["ignore_label"]
    # the mIoU is printed twice per evaluation (logger and print): one value per evaluation
    mious = [v for _, v in rep["miou"]]
    assert len(mious) == EPOCHS and mious[-1] > mious[0] + 10, mious
    evals = [e for e in run.events if e.get("type") == "eval"]
    assert len(evals) == EPOCHS and not any(e["aborted"] for e in evals)
    for ev in evals:
        # the padding (label 255) is ignored, never counted: labelled pixels fit in 53x73
        assert ev["pixels"] + ev["ignored"] == EVAL_IMAGES * PADDED_HW[0] * PADDED_HW[1], ev
        assert ev["pixels"] <= EVAL_IMAGES * EVAL_HW[0] * EVAL_HW[1], ev
        assert int(np.asarray(ev["matrix"]).sum()) == ev["pixels"]
    # the script's own Metrics hist is paired with segwatch's matrix of the same evaluation
    own = [e for e in run.events if e.get("type") == "script_metric" and e.get("source") == "metrics_class"]
    assert [e["matrix"] for e in own] == [e["matrix"] for e in evals]
    assert not {"metric.script_disagrees", "metric.eval_aborted"} & run.ids()


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("fault", ["none", "no_gt_shift", "num_classes_13"])
def test_dformer_style(fault, tmp_path):
    run = run_cli(SCRIPT, tmp_path, ["--fault", fault], config=CONFIG)
    assert run.report is not None, run.describe()
    assert run.contradictions() == []
    if fault == "none":
        _healthy_checks(run)
        return
    found = {f["id"]: f for f in run.report["findings"]}
    if fault == "num_classes_13":
        f = found.get("config.num_classes_mismatch")
        assert f is not None, f"missed: {run.describe()}"
        assert f["first_step"] == 0 and f["evidence"]["site"] == "decode_head", f
        assert (f["evidence"]["out_channels"], f["evidence"]["num_classes"]) == (13, 10), f
        assert "label.out_of_range" not in found  # the labels themselves are right
        return
    f = found.get("label.out_of_range")
    assert f is not None, f"missed: {run.describe()}"
    assert f["severity"] == "error" and f["first_step"] == 0
    assert f["evidence"]["num_classes"] == 10 and "10" in f["evidence"]["values"], f["evidence"]
    assert run.rc != 0  # CrossEntropy crashed on the class-10 target after segwatch named it
