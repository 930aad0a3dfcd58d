"""A torchvision-references-style training (tests/realistic/tvrefs_style/) through the real
CLI: a model returning ``{'out', 'aux'}`` with ``--aux-loss``, the criterion summing
``out + 0.5 * aux``, LinearLR warm-up then PolynomialLR to 0, VOC-like labels with 255
borders, and its own ConfusionMatrix printing ``mean IoU``.  Healthy, it is quiet; with
``model.train()`` forgotten after evaluation segwatch finds the eval mode; with the
criterion's ``ignore_index=255`` forgotten it names the mismatch before CE crashes; no report
contradicts its own confusion matrices."""
from __future__ import annotations

import pytest

from _common import HERE, run_cli

SCRIPT = HERE / "tvrefs_style" / "train.py"
CONFIG = HERE / "tvrefs_style" / "segwatch.yaml"
ARGS = ["--aux-loss", "--lr-warmup-epochs", "1"]
EPOCHS, ITERS_PER_EPOCH = 4, 12


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("fault", ["none", "eval_mode", "no_ignore_index"])
def test_tvrefs_style(fault, tmp_path):
    run = run_cli(SCRIPT, tmp_path, [*ARGS, "--fault", fault], config=CONFIG)
    rep = run.report
    assert rep is not None, run.describe()
    assert run.contradictions() == []
    found = {f["id"]: f for f in rep["findings"]}
    if fault == "none":
        assert run.rc == 0 and rep["exit_code"] == 0, run.stderr[-3000:]
        assert run.severe() == [], f"healthy run raised: {run.describe()}"
        assert rep["steps"] == EPOCHS * ITERS_PER_EPOCH
        # both CE calls of the criterion are seen, on the dict output {'out', 'aux'}
        calls = [e for e in run.events if e.get("type") == "lossfn" and e.get("output")]
        assert calls and calls[-1]["output"] == {"kind": "dict", "keys": ["out", "aux"]}, calls[-1:]
        assert calls[-1]["calls_per_step"] == 2 and all(c["ignore_index"] == 255 for c in calls[-1]["calls"])
        # the main head, not the auxiliary one computed after it
        model = next(e for e in run.events if e.get("type") == "model")
        assert model["head"] == "classifier" and model["out_channels"] == 8, model
        # "mean IoU: x" is read once per evaluation (the per-class "IoU: [...]" line is not an mIoU)
        printed = [e["value"] for e in run.events if e.get("type") == "script_metric" and e.get("source") == "output"]
        assert len(printed) == EPOCHS and printed[-1] > printed[0] + 10, printed
        mious = [v for _, v in rep["miou"]]
        assert len(mious) == EPOCHS and mious == pytest.approx(printed, abs=0.06), (mious, printed)
    elif fault == "eval_mode":
        f = found.get("model.eval_mode_in_training")
        assert f is not None, f"missed: {run.describe()}"
        # the first training step after the first evaluation
        assert f["first_step"] == ITERS_PER_EPOCH + 1 and f["evidence"]["all"], f
    else:
        f = found.get("loss.ignore_index_mismatch")
        assert f is not None, f"missed: {run.describe()}"
        assert f["first_step"] == 0 and f["evidence"]["loss_ignore_index"] == -100, f
        assert f["evidence"]["target_values"] == [255] and f["evidence"]["suggest"] == "ignore_index=255"
        assert run.rc != 0  # CE crashed on the 255 targets after segwatch named them
