"""A Hugging Face Trainer fine-tuning script in the shape of transformers' semantic-segmentation
example (tests/realistic/hf_style/run_semantic_segmentation.py), under the real CLI with no
segwatch config: ``HfArgumentParser`` with everything on the command line, ``id2label`` /
``label2id`` in a tiny random ``SegformerConfig`` (no download), ADE20K-style annotations
reduced to 0..N-1 with 255 = ignore, ``compute_metrics`` computing ``mean_iou`` itself,
``TrainingArguments(use_cpu=True, report_to=none, eval_strategy=epoch)``, warm-up then
polynomial decay of the LR.

    segwatch run --headless --report R.json run_semantic_segmentation.py -- --output_dir out ...

The fault: the learning rate 1000x too high (``--learning_rate 20`` for 2e-2), which issue 17
reported as missed on an HF Trainer SegFormer script: the model collapses to one class.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(importlib.util.find_spec("transformers") is None
                                or importlib.util.find_spec("accelerate") is None,
                                reason="transformers / accelerate not installed (pip install -e '.[test]')")

from _common import assert_class_names_in_markdown, run_cli  # noqa: E402

SCRIPT = Path(__file__).resolve().parent / "hf_style" / "run_semantic_segmentation.py"
CLASSES = ["wall", "floor", "ceiling", "window", "door", "table", "chair", "plant"]
LR = 2e-2
ARGS = ["--output_dir", "out", "--use_cpu", "--report_to", "none", "--do_train", "--do_eval",
        "--num_train_epochs", "4", "--per_device_train_batch_size", "8", "--per_device_eval_batch_size", "8",
        "--eval_strategy", "epoch", "--save_strategy", "no", "--logging_steps", "6", "--warmup_steps", "5",
        "--lr_scheduler_type", "polynomial", "--seed", "0", "--remove_unused_columns", "False",
        "--dataloader_num_workers", "0", "--disable_tqdm", "True"]


def _run(tmp_path, monkeypatch, lr: float):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    for k in ("SEGWATCH_RUN_DIR", "SEGWATCH_SOCKET"):
        monkeypatch.delenv(k, raising=False)
    return run_cli(SCRIPT, tmp_path, ARGS + ["--learning_rate", str(lr)])


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_healthy_trainer_script_is_quiet_and_names_its_classes(tmp_path, monkeypatch):
    run = _run(tmp_path, monkeypatch, LR)
    assert run.rc == 0 and run.report is not None, run.describe()
    assert run.severe() == [], run.describe()
    assert run.contradictions() == []
    assert run.report["steps"] == 48 and run.report["num_classes"] == len(CLASSES)
    assert run.report["inferred_ignore"] == 255
    # one evaluation per epoch plus the final trainer.evaluate(), each paired by the adapter
    # (SegFormer's logits are at 1/4 of the labels)
    evals = [e for e in run.events if e.get("type") == "eval"]
    assert [e["step"] for e in evals] == [12, 24, 36, 48, 48], evals
    assert all(e["explicit"] and not e["aborted"] and e["pixels"] > 0 for e in evals), evals
    assert len({e["pixels"] for e in evals}) == 1, evals       # the whole eval set every time
    # compute_metrics' mean_iou (the adapter reads eval_mean_iou) = segwatch's own matrix
    script = [e for e in run.events if e.get("type") == "script_metric" and e.get("source") == "adapter"]
    assert [e["key"] for e in script] == ["eval_mean_iou"] * 5, script
    own = {s: g for s, g in run.report["miou"]}
    assert all(abs(e["value"] - own[e["step"]]) < 0.05 for e in script), (script, own)
    assert script[-1]["value"] > script[0]["value"] + 10
    # id2label reaches the report: the per-class table of the Markdown report
    assert_class_names_in_markdown(run, CLASSES, "hf", tmp_path / "md")


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_learning_rate_x1000_collapse_is_found(tmp_path, monkeypatch):
    run = _run(tmp_path, monkeypatch, LR * 1000)
    assert run.report is not None, run.describe()
    found = [f for f in run.report["findings"] if f["id"] == "pred.collapse"]
    assert found, run.describe()
    ev = found[0]["evidence"]
    # the collapsed class is named with id2label's name
    assert ev["class_name"] == CLASSES[ev["class"]], ev
    assert run.contradictions() == []
