"""A VainF/DeepLabV3Plus-Pytorch-style training (tests/realistic/deeplabv3plus_style/) through
the real CLI: Cityscapes-layout PNGs whose raw label ids are mapped to the 19 train ids by
``encode_target`` (void -> 255), a DeepLabV3+ wrapped in ``nn.DataParallel``,
``CrossEntropyLoss(ignore_index=255)``, PolyLR, and ``StreamSegMetrics`` printing
``Mean IoU: 0.xxxxxx`` (a fraction, nanmean over the classes present).

Healthy (with the config, and without: the ignore value inferred), it is quiet and its mIoU
matches the script's; with ``encode_target`` skipped the raw ids (21..26) are
label.out_of_range, NOT an ignore_index mismatch (segwatch used to advise
``ignore_index=21``); with the criterion's ``ignore_index`` forgotten, the 255s are named;
with the LR x1000 the gradients explode within the first steps.  No report contradicts its
own confusion matrices."""
from __future__ import annotations

import pytest

from _common import HERE, run_cli

SCRIPT = HERE / "deeplabv3plus_style" / "main.py"
CONFIG = HERE / "deeplabv3plus_style" / "segwatch.yaml"
TOTAL_ITRS, VAL_INTERVAL = 96, 32
RAW_IDS_OUT_OF_RANGE = {21, 23, 24, 26}   # vegetation, sky, person, car before encode_target


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("fault", ["none", "none_auto", "no_train_id", "no_ignore", "lr_x1000"])
def test_deeplabv3plus_style(fault, tmp_path):
    args = ["--data_root", str(tmp_path / "cityscapes"), "--total_itrs", str(TOTAL_ITRS),
            "--val_interval", str(VAL_INTERVAL)]
    script_fault = fault if fault in ("no_train_id", "no_ignore") else "none"
    args += ["--fault", script_fault] + (["--lr", "100"] if fault == "lr_x1000" else [])
    run = run_cli(SCRIPT, tmp_path, args, config=None if fault == "none_auto" else CONFIG)
    rep = run.report
    assert rep is not None, run.describe()
    assert run.contradictions() == []
    found = {f["id"]: f for f in rep["findings"]}
    if fault in ("none", "none_auto"):
        assert run.rc == 0 and rep["exit_code"] == 0, run.stderr[-3000:]
        assert run.severe() == [], f"healthy run raised: {run.describe()}"
        assert rep["steps"] == TOTAL_ITRS and rep["num_classes"] == 19
        if fault == "none":
            assert rep["ignore_index"] == 255
            hello = next(e for e in run.events if e.get("type") == "hello")
            assert hello["config"]["dataset"]["class_names"][13] == "car"
        else:  # no config: the 255 void pixels are found in the data
            assert rep["ignore_index"] == "auto" and rep["inferred_ignore"] == 255, rep
        call = next(e for e in run.events if e.get("type") == "lossfn")["calls"][0]
        assert call["ignore_index"] == 255 and call["target_oor"] == [], call
        model = next(e for e in run.events if e.get("type") == "model")
        assert model["cls"] == "DataParallel" and model["out_channels"] == 19, model
        # "Mean IoU: 0.xx" is read once per validation, as a fraction, and is the nanmean
        # over the classes present: segwatch's mmseg-convention mIoU of the same matrix
        printed = [v for _, v in rep["script_metrics"]]
        assert len(printed) == TOTAL_ITRS // VAL_INTERVAL and printed[-1] > printed[0], printed
        assert [v for _, v in rep["miou_mmseg"]] == pytest.approx(printed, abs=0.01)
        assert [s for s, _ in rep["miou"]] == [VAL_INTERVAL * (i + 1) for i in range(len(printed))]
        assert "metric.script_disagrees" not in found
    elif fault == "no_train_id":
        f = found.get("label.out_of_range")
        assert f is not None, f"missed: {run.describe()}"
        assert f["first_step"] == 0 and set(map(int, f["evidence"]["values"])) <= RAW_IDS_OUT_OF_RANGE, f
        # the loss already ignores 255: raw ids are not an ignore value to suggest
        assert "loss.ignore_index_mismatch" not in found, found.get("loss.ignore_index_mismatch")
        assert run.rc != 0  # CE crashed on the raw ids after segwatch named them
    elif fault == "no_ignore":
        f = found.get("loss.ignore_index_mismatch")
        assert f is not None, f"missed: {run.describe()}"
        assert f["first_step"] == 0 and f["evidence"]["loss_ignore_index"] == -100, f
        assert f["evidence"]["target_values"] == [255] and f["evidence"]["suggest"] == "ignore_index=255"
        assert run.rc != 0
    else:
        f = found.get("grad.exploding")
        assert f is not None, f"missed: {run.describe()}"
        assert f["first_step"] <= 8, f
        assert "loss.nonfinite" in found or "loss.diverging" in found, run.describe()
