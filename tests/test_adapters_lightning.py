"""PyTorch Lightning adapter against the real ``lightning`` package (skipped without it)."""
from __future__ import annotations

import importlib.util

import pytest

# find_spec, not an import: collecting this file (`-m "not slow"` too) does not pay lightning's ~7 s import
pytestmark = pytest.mark.skipif(importlib.util.find_spec("lightning") is None,
                                reason="lightning not installed (pip install lightning)")


@pytest.fixture
def pl():
    import lightning.pytorch
    return lightning.pytorch

from test_adapters import (  # noqa: E402
    SCRIPTS, adapter_metrics, assert_healthy_adapter_run, describe, probes, run_cli, trains_without_segwatch)

SCRIPT = SCRIPTS / "lightning_train.py"
CONFIG = SCRIPTS / "configs" / "synth13.yaml"


@pytest.mark.slow
def test_callback_is_a_real_lightning_callback(pl):
    from segwatch.adapters.lightning import SegwatchCallback, make_callback

    assert issubclass(SegwatchCallback, pl.Callback)
    assert make_callback(pl.Callback) is SegwatchCallback
    cb = SegwatchCallback()
    # outside segwatch every hook is a no-op
    cb.on_validation_end(None, None)
    cb.on_validation_batch_end(None, None, {"logits": None}, None, 0)
    cb.on_train_batch_end(None, None, None, None, 0)


@pytest.mark.slow
def test_attach_picks_the_callback_base_of_the_trainer_package(pl):
    from segwatch.adapters import lightning as L

    class FakeTrainer:
        def __init__(self):
            self.callbacks = []

    t = FakeTrainer()
    L.attach(t)
    L.attach(t)                                   # once
    assert len(t.callbacks) == 1 and isinstance(t.callbacks[0], pl.Callback)
    try:
        import pytorch_lightning as old
    except ImportError:
        return
    FakeTrainer.__module__ = "pytorch_lightning.trainer.trainer"
    t2 = FakeTrainer()
    L.attach(t2)
    assert isinstance(t2.callbacks[0], old.Callback)


def test_make_callback_on_any_base_is_a_noop_outside_segwatch():
    """The fast set's test of the adapter: no lightning import (the tests above use the real one)."""
    from segwatch.adapters.lightning import make_callback

    class Base:
        def __init__(self):
            self.base_initialised = True

    cls = make_callback(Base)
    assert make_callback(Base) is cls and issubclass(cls, Base) and cls.__name__ == "SegwatchCallback"
    cb = cls(metric_key="val_miou")
    assert cb.base_initialised
    cb.on_validation_end(None, None)
    cb.on_validation_batch_end(None, None, {"logits": None}, None, 0)
    cb.on_train_batch_end(None, None, None, None, 0)
    cb.on_validation_epoch_end(None, None)


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_callback_by_hand_without_segwatch_trains():
    out = trains_without_segwatch(SCRIPT, "--callback", "--epochs", "1")
    assert "val_miou" in out and "callbacks: SegwatchCallback" in out


def _check_healthy(rep, events):
    assert_healthy_adapter_run(rep, {"metric.eval_aborted", "label.shape_mismatch"})
    evals = [e for e in events if e.get("type") == "eval"]
    # the sanity check (step 0) and 4 validation epochs, each ended cleanly and paired
    assert len(evals) == 5 and all(not e["aborted"] and e["pixels"] > 0 for e in evals), evals
    sm = adapter_metrics(events)
    assert len(sm) == 4 and all(e["key"] == "val_miou" for e in sm), sm
    assert sm[-1]["value"] > sm[0]["value"] + 10
    assert rep["miou"] and rep["miou"][-1][1] == pytest.approx(sm[-1]["value"], abs=0.01)
    assert probes(events) == []


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_unmodified_script_under_segwatch_run_auto(tmp_path):
    rep, events, proc = run_cli(tmp_path, SCRIPT, CONFIG)
    _check_healthy(rep, events)
    out = (tmp_path / "run" / "stdout.log").read_text()
    assert "callbacks: SegwatchCallback" in out


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_callback_added_by_hand(tmp_path):
    rep, events, proc = run_cli(tmp_path, SCRIPT, CONFIG, "--callback", autodetect=False)
    _check_healthy(rep, events)


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_collapse_is_found(tmp_path):
    rep, events, proc = run_cli(tmp_path, SCRIPT, CONFIG, "--fault", "collapse")
    assert "pred.collapse" in {f["id"] for f in rep["findings"]}, describe(rep)


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_adapter_none_attaches_nothing(tmp_path):
    cfg = tmp_path / "none.yaml"
    cfg.write_text(CONFIG.read_text().replace("adapter: auto", "adapter: none"))
    rep, events, proc = run_cli(tmp_path, SCRIPT, cfg, "--epochs", "1")
    out = (tmp_path / "run" / "stdout.log").read_text()
    assert "callbacks: \n" in out or out.rstrip().endswith("callbacks:"), out[-500:]
    assert not adapter_metrics(events)
