"""A segmentation_models.pytorch-style training (tests/realistic/smp_style/) through the
real CLI: a Unet whose pretrained encoder is frozen on purpose (only the decoder and head
train).  Healthy, it is quiet: a frozen backbone is not model.frozen; with the checkpoint's
``module.`` prefix loaded under ``strict=False`` segwatch finds that nothing was loaded; no
report contradicts its own confusion matrices."""
from __future__ import annotations

import pytest

from _common import HERE, run_cli

SCRIPT = HERE / "smp_style" / "train.py"
CONFIG = HERE / "smp_style" / "segwatch.yaml"
EPOCHS, ITERS_PER_EPOCH = 5, 12


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("fault", ["none", "prefix"])
def test_smp_style(fault, tmp_path):
    run = run_cli(SCRIPT, tmp_path, ["--fault", fault], config=CONFIG)
    rep = run.report
    assert rep is not None, run.describe()
    assert run.rc == 0 and rep["exit_code"] == 0, run.stderr[-3000:]
    assert rep["steps"] == EPOCHS * ITERS_PER_EPOCH
    assert run.contradictions() == []
    model = next(e for e in run.events if e.get("type") == "model")
    assert model["trainable"] < model["params"], model  # the encoder is frozen
    checklist = {c["id"]: c for c in rep["checklist"]}
    found = {f["id"]: f for f in rep["findings"]}
    if fault == "none":
        assert run.severe() == [], f"healthy run raised: {run.describe()}"
        assert checklist["pretrained_loaded"]["state"] == "ok", checklist["pretrained_loaded"]
        mious = [v for _, v in rep["miou"]]
        assert len(mious) == EPOCHS and mious[-1] > mious[0] + 10, mious
    else:
        f = found.get("model.pretrained_not_loaded")
        assert f is not None, f"missed: {run.describe()}"
        assert f["evidence"]["loaded"] == 0 and f["evidence"]["module"] == "TinyResNetEncoder", f
        assert checklist["pretrained_loaded"]["state"] == "fail"
    assert "model.frozen" not in found  # frozen on purpose, in both runs
