"""mmengine / mmsegmentation adapter against the real ``mmengine`` (skipped without it).

mmsegmentation itself is not used: it imports mmcv, and mmcv 2.2.0 is on PyPI only as a
source distribution whose build (C++/CUDA ops) fails here before it starts (its setup needs
``pkg_resources``); ``pip install mmsegmentation`` does not pull mmcv, so ``import mmseg``
cannot work beside torch 2.13 without a hand-built mmcv.
The test runner is laid out like mmseg (data samples with ``gt_sem_seg`` / ``pred_sem_seg``
``PixelData``, a stacking data preprocessor, an IoUMetric-like evaluator reporting ``mIoU``).
"""
from __future__ import annotations

import subprocess
import sys

import pytest

mmengine = pytest.importorskip("mmengine", reason="mmengine not installed (pip install mmengine)")

from test_adapters import ROOT, SCRIPTS, adapter_disagreements, describe, errors, probes, run_cli  # noqa: E402

SCRIPT = SCRIPTS / "mmengine_train.py"
CONFIG = SCRIPTS / "configs" / "mm13.yaml"


def test_hook_is_a_registered_mmengine_hook():
    from mmengine.hooks import Hook
    from mmengine.registry import HOOKS

    from segwatch.adapters.mmseg import SegwatchHook

    assert issubclass(SegwatchHook, Hook)
    assert isinstance(HOOKS.build(dict(type="SegwatchHook")), SegwatchHook)
    h = SegwatchHook()
    h.after_val_epoch(None, {"mIoU": 10.0})   # no-op outside segwatch
    h.after_val_iter(None, 0, None, [])


def test_pairs_from_mmseg_style_outputs():
    torch = pytest.importorskip("torch")
    from mmengine.structures import BaseDataElement, PixelData

    from segwatch.adapters.mmseg import pairs_from_outputs

    d = BaseDataElement()
    d.gt_sem_seg = PixelData(data=torch.zeros(1, 4, 4, dtype=torch.long))
    d.pred_sem_seg = PixelData(data=torch.ones(1, 4, 4, dtype=torch.long))
    as_dict = {"gt_sem_seg": {"data": torch.zeros(1, 4, 4)}, "seg_logits": {"data": torch.zeros(3, 4, 4)}}
    pairs = pairs_from_outputs([d, as_dict, object()])
    assert len(pairs) == 2
    assert pairs[0][0].sum() == 16 and pairs[1][0].shape == (3, 4, 4)


def _check(rep, events):
    assert rep["exit_code"] == 0
    assert errors(rep) == [], describe(rep)
    ids = {f["id"] for f in rep["findings"]}
    assert not ids & {"metric.eval_aborted", "label.shape_mismatch", "metric.cm_empty"}, describe(rep)
    assert adapter_disagreements(rep) == [], describe(rep)
    model = [e for e in events if e.get("type") == "model"]
    assert model and model[0]["cls"] == "EncoderDecoder" and model[0]["out_channels"] == 13
    evals = [e for e in events if e.get("type") == "eval"]
    assert len(evals) == 4 and all(e["explicit"] and not e["aborted"] and e["pixels"] > 0 for e in evals), evals
    sm = [e for e in events if e.get("type") == "script_metric" and e.get("source") == "adapter"]
    assert [e["key"] for e in sm] == ["mIoU"] * 4, sm
    assert sm[-1]["value"] > sm[0]["value"] + 10
    assert probes(events) == []


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_unmodified_runner_under_segwatch_run_auto(tmp_path):
    rep, events, proc = run_cli(tmp_path, SCRIPT, CONFIG)
    _check(rep, events)
    assert "SegwatchHook" in (tmp_path / "run" / "stdout.log").read_text()


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_hook_in_custom_hooks_by_hand(tmp_path):
    rep, events, proc = run_cli(tmp_path, SCRIPT, CONFIG, "--hook", autodetect=False)
    _check(rep, events)


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_collapse_is_found(tmp_path):
    rep, events, proc = run_cli(tmp_path, SCRIPT, CONFIG, "--fault", "collapse")
    assert "pred.collapse" in {f["id"] for f in rep["findings"]}, describe(rep)


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_hook_by_hand_without_segwatch_trains():
    proc = subprocess.run([sys.executable, str(SCRIPT), "--hook", "--epochs", "1"], cwd=str(ROOT),
                          capture_output=True, text=True, timeout=110)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "SegwatchHook" in proc.stdout
