"""A Pytorch-UNet-style training (tests/realistic/unet_style/) through the real CLI: the
classic ~31M-parameter UNet in channels_last, RMSprop, CE + Dice, tqdm, the Dice score
printed and no mIoU.  Healthy (the script's defaults) it is quiet; with the learning rate
typed x1000 (``--learning-rate 1e-2``) the network collapses to one class and segwatch says
so; neither report contradicts its own confusion matrices."""
from __future__ import annotations

import pytest

from _common import HERE, run_cli

SCRIPT = HERE / "unet_style" / "train.py"
STEPS = 10  # 20 training images, batch 2, one epoch; validation every 2 steps


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("args", [[], ["--learning-rate", "1e-2"]], ids=["healthy", "lr_x1000"])
def test_unet_style(args, tmp_path):
    run = run_cli(SCRIPT, tmp_path, args)  # no --config: a new user's first run
    assert run.report is not None, run.describe()
    assert run.rc == 0 and run.report["exit_code"] == 0, run.stderr[-3000:]
    assert run.report["steps"] == STEPS
    assert run.contradictions() == []
    model = next(e for e in run.events if e.get("type") == "model")
    assert model["cls"] == "UNet" and model["params"] > 30_000_000 and model["head"] == "outc", model
    # the script prints Dice (logging, on stderr), never an mIoU: segwatch's mIoU is its own
    assert run.stderr.count("Validation Dice score") == 5 or "Validation Dice score" in run.stdout
    assert not [e for e in run.events if e.get("type") == "script_metric"]
    assert len([e for e in run.events if e.get("type") == "eval"]) == 5
    if not args:
        assert run.severe() == [], f"healthy run raised: {run.describe()}"
    else:
        assert "pred.collapse" in run.ids(), f"missed: {run.describe()}"


@pytest.mark.slow  # an in-process training under the shim
def test_channels_last_weights_are_seen_stepping():
    """``model.to(memory_format=torch.channels_last)`` (Pytorch-UNet does it) makes the conv
    weights non-contiguous; the update probe once read them through a cached copy, which
    never changed, and raised optim.params_not_stepped on every healthy UNet run."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    from segwatch.shim import MemoryEmitter, Shim

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
                          nn.Conv2d(16, 4, 3, padding=1)).to(memory_format=torch.channels_last)
    assert not model[0].weight.is_contiguous()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    g = torch.Generator().manual_seed(0)
    xs, ys = torch.randn(12, 4, 3, 12, 12, generator=g), torch.randint(0, 4, (12, 4, 12, 12), generator=g)
    shim = Shim(MemoryEmitter(), {"dataset": {"num_classes": 4}}, debug=True, script=__file__)
    shim.install()
    try:
        for x, y in zip(xs, ys):
            loss = F.cross_entropy(model(x.to(memory_format=torch.channels_last)), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        shim.uninstall(finish=True)
    judged = [e["never_stepped"] for e in shim.emitter.of_type("step") if e.get("never_stepped") is not None]
    assert len(judged) >= 5 and set(judged) == {0}, judged
