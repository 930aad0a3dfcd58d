"""mmengine / mmsegmentation adapter against the real ``mmengine`` and ``mmsegmentation``.

Two kinds of trainings go through ``segwatch run --headless``:

* ``mmengine_train.py``: an mmengine ``Runner`` laid out like mmseg (its own data samples,
  a stacking data preprocessor, an IoUMetric-like evaluator); needs mmengine only;
* ``mmseg_train.py``: mmsegmentation 1.2.2 itself (tools/train.py's shape: Config.fromfile,
  Runner.from_cfg, runner.train()) with a tiny ResNetV1c + FCNHead config and a
  ``BaseSegDataset`` over synthetic PNGs.  mmcv-lite has no compiled ops, so the training
  gets the test-only ``mmcv.ops`` stand-in of ``tests/mmcv_ops_standin`` on its PYTHONPATH.
"""
from __future__ import annotations

import subprocess
import sys

import pytest

mmengine = pytest.importorskip("mmengine", reason="mmengine not installed (pip install mmengine)")

from test_adapters import (  # noqa: E402
    ROOT, SCRIPTS, adapter_metrics, assert_healthy_adapter_run, describe, probes, run_cli, trains_without_segwatch)

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
    assert_healthy_adapter_run(rep, {"metric.eval_aborted", "label.shape_mismatch", "metric.cm_empty"})
    model = [e for e in events if e.get("type") == "model"]
    assert model and model[0]["cls"] == "EncoderDecoder" and model[0]["out_channels"] == 13
    evals = [e for e in events if e.get("type") == "eval"]
    assert len(evals) == 4 and all(e["explicit"] and not e["aborted"] and e["pixels"] > 0 for e in evals), evals
    sm = adapter_metrics(events)
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
    assert "SegwatchHook" in trains_without_segwatch(SCRIPT, "--hook", "--epochs", "1")


# ---------------------------------------------------------------------------------------
# mmsegmentation itself (mmsegmentation 1.2.2 + mmcv-lite 2.1.0, with the test-only mmcv.ops
# stand-in of tests/mmcv_ops_standin put on the training's PYTHONPATH)
STANDIN = ROOT / "tests" / "mmcv_ops_standin"
MMSEG_SCRIPT = SCRIPTS / "mmseg_train.py"
MMSEG_CONFIG = SCRIPTS / "configs" / "mmseg_tiny_fcn.py"
MMSEG_SEGWATCH = SCRIPTS / "configs" / "mmseg6.yaml"
CLASSES = ["sky", "tree", "road", "car", "person", "building"]


def _standin_env():
    import os
    return {"PYTHONPATH": os.pathsep.join(p for p in (str(STANDIN), os.environ.get("PYTHONPATH")) if p)}


@pytest.mark.slow
def test_mmseg_models_import_with_the_standin():
    pytest.importorskip("mmseg", reason="mmsegmentation not installed (pip install -e '.[test]')")
    code = ("import mmseg.models, mmcv.ops, torch\n"
            "from mmcv.ops import point_sample, PSAMask\n"
            "x = torch.arange(16.).view(1, 1, 4, 4)\n"
            "print(point_sample(x, torch.tensor([[[0.5, 0.5]]]), align_corners=True).item())\n"
            "try:\n    PSAMask()\nexcept NotImplementedError as e:\n    print('raises', 'mmcv._ext' in str(e))\n")
    import os
    env = os.environ.copy()
    env.update(_standin_env())
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["7.5", "raises", "True"], proc.stdout


def _run_mmseg(tmp_path, *, zero_is_unlabeled=False, reduce_zero_label=None, options=()):
    pytest.importorskip("mmseg", reason="mmsegmentation not installed (pip install -e '.[test]')")
    sys.path.insert(0, str(SCRIPTS))
    try:
        from mmseg_data import write_dataset
    finally:
        sys.path.remove(str(SCRIPTS))
    data = write_dataset(str(tmp_path / "data"), classes=len(CLASSES), zero_is_unlabeled=zero_is_unlabeled)
    if reduce_zero_label is None:
        reduce_zero_label = zero_is_unlabeled
    opts = [f"{loader}.dataset.{k}={v}" for loader in ("train_dataloader", "val_dataloader")
            for k, v in (("data_root", data), ("reduce_zero_label", reduce_zero_label))]
    return run_cli(tmp_path, MMSEG_SCRIPT, MMSEG_SEGWATCH, str(MMSEG_CONFIG), "--work-dir", str(tmp_path / "work"),
                   "--cfg-options", *opts, *options, timeout=240, env_extra=_standin_env())


def _check_mmseg_healthy(rep, events):
    assert_healthy_adapter_run(rep)
    model = [e for e in events if e.get("type") == "model"]
    assert model and model[0]["cls"] == "EncoderDecoder" and model[0]["out_channels"] == len(CLASSES)
    # the labels inside mmseg's data samples reach the batch probe (not the uint8 images)
    train_labels = [e["labels"] for e in events if e.get("type") == "batch" and e.get("phase") == "train"
                    and e.get("labels")]
    assert train_labels and {lab["key"] for lab in train_labels} == {"data_samples.gt_sem_seg"}, train_labels[:1]
    assert all(lab["oor_total"] == 0 and lab["ignore"] > 0 for lab in train_labels)
    # IoUMetric at iterations 20, 40, 60: segwatch's matrix from seg_logits/pred_sem_seg + gt_sem_seg
    evals = [e for e in events if e.get("type") == "eval"]
    assert len(evals) == 3 and all(e["explicit"] and not e["aborted"] and e["pixels"] > 0 for e in evals), evals
    sm = adapter_metrics(events)
    assert [e["key"] for e in sm] == ["mIoU"] * 3, sm
    assert sm[-1]["value"] > sm[0]["value"] + 10
    names = [e for e in events if e.get("type") == "probe" and e.get("name") == "class_names"]
    assert names and names[0]["class_names"] == CLASSES and names[0]["source"] == "mmseg"
    assert probes(events) == []


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_mmseg_healthy_255_ignore(tmp_path):
    rep, events, proc = _run_mmseg(tmp_path)
    _check_mmseg_healthy(rep, events)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_mmseg_healthy_reduce_zero_label(tmp_path):
    rep, events, proc = _run_mmseg(tmp_path, zero_is_unlabeled=True)
    _check_mmseg_healthy(rep, events)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_mmseg_collapse_lr_x1000_is_found(tmp_path):
    rep, events, proc = _run_mmseg(tmp_path, options=["optim_wrapper.optimizer.lr=10.0"])
    # measured: pred.collapse at the first evaluation (iteration 40, after the 10 warm-up ones)
    assert "pred.collapse" in {f["id"] for f in rep["findings"]}, describe(rep)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_mmseg_reduce_zero_label_mismatch_is_found(tmp_path):
    # annotations use 0 for unlabeled (ADE20K-style) but the config reads them as-is: 0 is
    # trained as a class and the last class's id (6) is out of range for 6 classes (on CPU the
    # loss then raises at the first iteration: segwatch names the cause from that batch)
    rep, events, proc = _run_mmseg(tmp_path, zero_is_unlabeled=True, reduce_zero_label=False)
    assert "label.out_of_range" in {f["id"] for f in rep["findings"]}, describe(rep)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_mmseg_num_classes_mismatch_is_found(tmp_path):
    # a config copied from Cityscapes: 19 output channels for a 6-class dataset
    rep, events, proc = _run_mmseg(tmp_path, options=["model.decode_head.num_classes=19"])
    assert "config.num_classes_mismatch" in {f["id"] for f in rep["findings"]}, describe(rep)
