"""Hugging Face Trainer adapter against the real ``transformers`` (skipped without it): a tiny
randomly initialised SegFormer, no weight download (HF_HUB_OFFLINE=1)."""
from __future__ import annotations

import importlib.util
import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# find_spec, not an import: collecting this file (`-m "not slow"` too) does not pay transformers' import
pytestmark = [
    pytest.mark.skipif(importlib.util.find_spec("transformers") is None,
                       reason="transformers not installed (pip install transformers accelerate)"),
    pytest.mark.skipif(importlib.util.find_spec("accelerate") is None,
                       reason="transformers.Trainer needs accelerate (pip install accelerate)"),
]

from test_adapters import (  # noqa: E402
    SCRIPTS, adapter_metrics, assert_healthy_adapter_run, probes, run_cli, trains_without_segwatch)

SCRIPT = SCRIPTS / "hf_train.py"
CONFIG = SCRIPTS / "configs" / "hf13.yaml"


@pytest.mark.slow
def test_callback_is_a_real_trainer_callback():
    import transformers

    from segwatch.adapters.hf import SegwatchTrainerCallback

    assert issubclass(SegwatchTrainerCallback, transformers.TrainerCallback)
    cb = SegwatchTrainerCallback()
    cb.on_evaluate(None, None, None, metrics={"eval_mean_iou": 0.5})   # no-op outside segwatch
    cb.on_train_begin(None, None, None, model=None)


def test_forward_hook_is_a_noop_outside_segwatch():
    torch = pytest.importorskip("torch")
    from segwatch.adapters.hf import hook_model

    m = torch.nn.Conv2d(3, 4, 1)
    assert hook_model(m) is True and hook_model(m) is False
    with torch.no_grad():
        out = m(torch.zeros(1, 3, 4, 4))
    assert out.shape == (1, 4, 4, 4)


def _check(rep, events):
    assert_healthy_adapter_run(rep, {"metric.eval_aborted", "label.shape_mismatch", "metric.cm_empty"})
    evals = [e for e in events if e.get("type") == "eval"]
    # one pass per epoch, every batch paired (logits upsampled from 1/2 size to the labels)
    assert len(evals) == 5, evals
    assert all(e["explicit"] and not e["aborted"] and e["batches"] == 2 and e["pixels"] == evals[0]["pixels"] > 0
               for e in evals), evals
    sm = adapter_metrics(events)
    assert [e["key"] for e in sm] == ["eval_mean_iou"] * 5, sm
    # the Trainer's compute_metrics and segwatch's own matrix agree, evaluation by evaluation
    own = {s: g for s, g, *_ in rep["miou"]}
    for e in sm:
        assert e["value"] == pytest.approx(own[e["step"]], abs=0.01)
    assert sm[-1]["value"] > sm[0]["value"] + 10
    assert probes(events) == []


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_unmodified_script_under_segwatch_run_auto(tmp_path):
    rep, events, proc = run_cli(tmp_path, SCRIPT, CONFIG)
    _check(rep, events)
    assert "SegwatchTrainerCallback" in (tmp_path / "run" / "stdout.log").read_text()


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_callback_added_by_hand(tmp_path):
    rep, events, proc = run_cli(tmp_path, SCRIPT, CONFIG, "--callback", autodetect=False)
    _check(rep, events)


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_callback_by_hand_without_segwatch_trains():
    out = trains_without_segwatch(SCRIPT, "--callback", "--epochs", "1", env=dict(os.environ, HF_HUB_OFFLINE="1"))
    assert "SegwatchTrainerCallback" in out
