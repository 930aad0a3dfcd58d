"""A CoinCheung/BiSeNet-style training (tests/realistic/bisenet_style/) through the real CLI:
BiSeNetV2 with four auxiliary heads (5 outputs in training), one ``OhemCELoss(0.7, 255)`` per
output (CE with ``reduction='none'`` inside), raw Cityscapes ids mapped by a uint8 lookup
table before the transforms, the whole training one pass of one loader, and a final
``eval_model`` with three passes over the val loader: single scale, sliding window (the model
sees 64x64 crops of 64x128 images) and multi-scale + flip (it sees rescaled images).

Healthy, it is quiet -- the crop and multi-scale passes are not a label shape mismatch nor an
empty confusion matrix (segwatch raised both as errors on the real BiSeNet) -- and segwatch's
mIoU of the single-scale pass is the script's ``ss`` mIoU (its IoU has a +1 in the
denominator: absent classes count 0, the mean over all 19).  With the lookup table skipped,
the raw ids are label.out_of_range; with the losses built with ``lb_ignore=-100``, the 255s
are named as loss.ignore_index_mismatch.  No report contradicts its own matrices."""
from __future__ import annotations

import re

import pytest

from _common import HERE, run_cli

SCRIPT = HERE / "bisenet_style" / "train_amp.py"
CONFIG = HERE / "bisenet_style" / "segwatch.yaml"
MAX_ITER = 120
RAW_IDS_OUT_OF_RANGE = {21, 23, 24, 26}


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("fault", ["none", "no_train_id", "no_ignore"])
def test_bisenet_style(fault, tmp_path):
    run = run_cli(SCRIPT, tmp_path, ["--fault", fault], config=CONFIG)
    rep = run.report
    assert rep is not None, run.describe()
    assert run.contradictions() == []
    found = {f["id"]: f for f in rep["findings"]}
    if fault == "none":
        assert run.rc == 0 and rep["exit_code"] == 0, run.stderr[-3000:]
        assert run.severe() == [], f"healthy run raised: {run.describe()}"
        assert rep["steps"] == MAX_ITER
        # the main head, not an auxiliary one; five OHEM CE calls a step on the 5-tuple output
        model = next(e for e in run.events if e.get("type") == "model")
        assert model["head"] == "head" and model["out_channels"] == 19, model
        calls = [e for e in run.events if e.get("type") == "lossfn" and e.get("output")]
        assert calls and calls[-1]["output"]["kind"] == "tuple" and calls[-1]["output"]["n"] == 5, calls[-1:]
        assert calls[-1]["calls_per_step"] == 5
        assert all(c["ignore_index"] == 255 and c["reduction"] == "none" for c in calls[-1]["calls"])
        # three passes seen; the two on rescaled/cropped images could not be paired
        evals = [e for e in run.events if e.get("type") == "eval"]
        assert [e["size_mismatch"] for e in evals] == [0, 4, 4], [(e["index"], e["size_mismatch"]) for e in evals]
        assert rep["evals"] == 3
        # segwatch's mIoU (mean over all classes) is the single-scale pass's printed one
        m = re.search(r"\|\s*mious\s*\|\s*([0-9.]+)", run.stdout)
        assert m is not None, run.stdout[-2000:]
        assert len(rep["miou"]) == 1 and rep["miou"][0][0] == MAX_ITER
        assert rep["miou"][0][1] == pytest.approx(100 * float(m.group(1)), abs=0.1), (rep["miou"], m.group(0))
        assert rep["miou"][0][1] > 100 * 3 / 19   # it learned more than the three largest classes
    elif fault == "no_train_id":
        f = found.get("label.out_of_range")
        assert f is not None, f"missed: {run.describe()}"
        assert f["first_step"] == 0 and set(map(int, f["evidence"]["values"])) <= RAW_IDS_OUT_OF_RANGE, f
        assert "loss.ignore_index_mismatch" not in found, found.get("loss.ignore_index_mismatch")
        assert run.rc != 0
    else:
        f = found.get("loss.ignore_index_mismatch")
        assert f is not None, f"missed: {run.describe()}"
        assert f["first_step"] == 0 and f["evidence"]["loss_ignore_index"] == -100, f
        assert f["evidence"]["target_values"] == [255] and f["evidence"]["suggest"] == "ignore_index=255"
        assert run.rc != 0
