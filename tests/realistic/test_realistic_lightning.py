"""A Lightning project as people write them (tests/realistic/lightning_style/train.py), under
the real CLI with no segwatch config: a ``LightningDataModule``, a ``LightningModule`` with
``training_step`` / ``validation_step``, torchmetrics' ``MulticlassJaccardIndex``, a
step-wise LR schedule (warm-up from 0, poly decay to 0), ``Trainer(accelerator="cpu",
max_steps=48, val_check_interval=12, logger=False, enable_checkpointing=False)`` and
Lightning's sanity check before training.

    segwatch run --headless --report R.json train.py [-- --fault no-ignore-index]

The fault: loss and metric built without ``ignore_index`` while the labels mark unlabeled
pixels 255.  The first thing to run the loss is the sanity check (no autograd), where the
loss raises ``Target 255 is out of bounds``: segwatch must name the loss's ignore_index.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(importlib.util.find_spec("lightning") is None
                                or importlib.util.find_spec("torchmetrics") is None,
                                reason="lightning / torchmetrics not installed (pip install -e '.[test]')")

from _common import run_cli  # noqa: E402

SCRIPT = Path(__file__).resolve().parent / "lightning_style" / "train.py"


def _run(tmp_path, monkeypatch, *args):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    for k in ("SEGWATCH_RUN_DIR", "SEGWATCH_SOCKET"):
        monkeypatch.delenv(k, raising=False)
    return run_cli(SCRIPT, tmp_path, list(args))


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_healthy_lightning_module_is_quiet(tmp_path, monkeypatch):
    run = _run(tmp_path, monkeypatch)
    assert run.rc == 0 and run.report is not None, run.describe()
    assert run.severe() == [], run.describe()
    assert run.contradictions() == []
    assert run.report["steps"] == 48 and run.report["num_classes"] == 6
    assert run.report["inferred_ignore"] == 255
    # the sanity check and the four validations, each ended cleanly by the callback
    evals = [e for e in run.events if e.get("type") == "eval"]
    assert [e["step"] for e in evals] == [0, 12, 24, 36, 48], evals
    assert not any(e["aborted"] for e in evals) and all(e["pixels"] > 0 for e in evals)
    # the sanity check (flagged by the adapter) is kept in the events, not in the mIoU history
    assert [bool(e.get("sanity")) for e in evals] == [True, False, False, False, False], evals
    assert [s for s, _ in run.report["miou"]] == [12, 24, 36, 48], run.report["miou"]
    # torchmetrics' val/mIoU (read by the adapter from callback_metrics, not during the sanity
    # check) agrees with segwatch's own matrix of the same evaluation
    script = [e for e in run.events if e.get("type") == "script_metric" and e.get("source") == "adapter"]
    assert [(e["key"], e["step"]) for e in script] == [("val/mIoU", s) for s in (12, 24, 36, 48)], script
    own = {s: g for s, g in run.report["miou"]}
    assert all(abs(e["value"] - own[e["step"]]) < 0.05 for e in script), (script, own)
    assert script[-1]["value"] > 60


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_loss_and_metric_without_ignore_index_are_named(tmp_path, monkeypatch):
    run = _run(tmp_path, monkeypatch, "--fault", "no-ignore-index")
    assert run.report is not None and run.rc != 0, run.describe()
    found = [f for f in run.report["findings"] if f["id"] == "loss.ignore_index_mismatch"]
    assert found, run.describe()
    ev = found[0]["evidence"]
    assert ev["loss_fn"] == "nn.CrossEntropyLoss" and ev["loss_ignore_index"] == -100, ev
    assert ev["target_values"] == [255] and ev["suggest"] == "ignore_index=255", ev
    assert run.contradictions() == []


# -- the shim's part, in process (fast) -----------------------------------------------------

def test_an_evaluation_loss_about_to_raise_is_reported_before_the_call():
    import torch
    import torch.nn as nn

    from segwatch.shim import MemoryEmitter, Shim

    shim = Shim(MemoryEmitter(), {}, debug=True, script=__file__)
    shim.install()
    logits = torch.zeros(2, 4, 3, 3)
    target = torch.zeros(2, 3, 3, dtype=torch.long)
    target[0, 0, 0] = 255
    try:
        with torch.no_grad():
            nn.CrossEntropyLoss(ignore_index=255)(logits, target)   # fine: nothing to say
            quiet = list(shim.emitter.of_type("lossfn"))
            with pytest.raises(IndexError):
                nn.CrossEntropyLoss()(logits, target)
    finally:
        shim.uninstall(finish=True)
    assert quiet == []
    said = list(shim.emitter.of_type("lossfn"))
    assert len(said) == 1 and said[0]["calls"][0]["target_oor"] == [255], said
    assert said[0]["calls"][0]["ignore_index"] == -100
