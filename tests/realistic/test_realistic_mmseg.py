"""mmsegmentation as its users lay it out (tests/realistic/mmseg_style/), under the real CLI.

The project: mmseg's unmodified-shape ``tools/train.py`` (``Config.fromfile``,
``--cfg-options``, ``work_dir`` defaulting to ``./work_dirs/<config name>``,
``Runner.from_cfg(cfg).train()``), configs in mmseg's own style (``configs/_base_/{models,
datasets,schedules}`` + ``configs/fcn/<name>.py``), a user package ``synthseg`` with a
registered ``BaseSegDataset`` (classes in ``METAINFO``) loaded by the config's
``custom_imports``, and ADE20K-style annotation PNGs in ``data/synth_street/{img_dir,ann_dir}/
{train,val}`` (0 = unlabeled, read with the dataset's ``reduce_zero_label=True``).  The
training runs in a fresh working directory with ``PYTHONPATH`` set the way mmseg's
``tools/dist_train.sh`` sets it, plus the test-only ``mmcv.ops`` stand-in (mmcv-lite has no
compiled ops).  No segwatch config: a new user's first ``segwatch run``.

    segwatch run --headless --report R.json tools/train.py -- configs/fcn/<config>.py

Unlike tests/test_adapters_mmseg.py (one flat config, a segwatch config naming the dataset),
this holds segwatch to what the framework alone tells it: the class names of the dataset's
``dataset_meta`` reach the report, and the count of those names is what a head's
``num_classes`` is checked against.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import importlib.util

import pytest

# find_spec, not an import: collecting this file (`-m "not slow"` too) does not pay mmseg's import
pytestmark = pytest.mark.skipif(importlib.util.find_spec("mmseg") is None,
                                reason="mmsegmentation not installed (pip install -e '.[test]')")

from _common import ROOT, assert_class_names_in_markdown, run_cli  # noqa: E402

PROJECT = Path(__file__).resolve().parent / "mmseg_style"
STANDIN = ROOT / "tests" / "mmcv_ops_standin"
TRAIN = PROJECT / "tools" / "train.py"
CONFIG = PROJECT / "configs" / "fcn" / "fcn_r18-tiny-d8_4xb4-40i_synth-street-64x64.py"
FAULT_CONFIG = PROJECT / "configs" / "fcn" / "fcn_r18-tiny-d8_4xb4-40i_synth-street-64x64_FAULT-num-classes.py"
CLASSES = ["sky", "tree", "road", "car", "person", "building"]


def _run(tmp_path, monkeypatch, config: Path):
    """Write the dataset into a fresh project directory and train there under segwatch."""
    sys.path.insert(0, str(PROJECT / "synthseg"))
    try:
        from make_data import write
    finally:
        sys.path.remove(str(PROJECT / "synthseg"))
    write(str(tmp_path / "data" / "synth_street"))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(PROJECT), str(STANDIN)]))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    for k in ("SEGWATCH_RUN_DIR", "SEGWATCH_SOCKET"):
        monkeypatch.delenv(k, raising=False)
    return run_cli(TRAIN, tmp_path, [str(config)])


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_healthy_mmseg_project_is_quiet_and_names_its_classes(tmp_path, monkeypatch):
    run = _run(tmp_path, monkeypatch, CONFIG)
    assert run.rc == 0 and run.report is not None, run.describe()
    assert run.severe() == [], run.describe()
    assert run.contradictions() == []
    # the tools/train.py default work_dir, relative to where the user ran it
    work_dir = tmp_path / "work_dirs" / CONFIG.stem
    assert (work_dir / "iter_40.pth").exists(), sorted(p.name for p in tmp_path.iterdir())
    # the model and the evaluations segwatch built itself, with no config naming the dataset
    model = [e for e in run.events if e.get("type") == "model"]
    assert model and model[0]["cls"] == "EncoderDecoder" and model[0]["out_channels"] == len(CLASSES)
    # the decode head, not the auxiliary head whose loss mmseg computes after it
    assert model[0]["site"] == model[0]["head"] == "decode_head.conv_seg", model[0]
    assert run.report["num_classes"] == len(CLASSES)
    evals = [e for e in run.events if e.get("type") == "eval" and not e.get("aborted")]
    assert [e["step"] for e in evals] == [20, 40], evals
    # reduce_zero_label=True: the labels reaching the loss hold 0..5 and 255 (the old 0),
    # which segwatch, told nothing, infers as the ignore value
    labels = [e["labels"] for e in run.events if e.get("type") == "batch" and e.get("phase") == "train"
              and e.get("labels")]
    assert labels and all(lab["min"] == 0 and set(lab["oor"]) <= {"255"} for lab in labels), labels[:1]
    assert run.report["inferred_ignore"] == 255, run.report["inferred_ignore"]
    # IoUMetric's mIoU, read by the adapter, agrees with segwatch's own matrix
    script = [e for e in run.events if e.get("type") == "script_metric" and e.get("source") == "adapter"]
    assert [e["step"] for e in script] == [20, 40], script
    own = dict((s, g) for s, g in run.report["miou"])
    assert all(abs(e["value"] - own[e["step"]]) < 0.05 for e in script), (script, own)
    assert script[-1]["value"] > script[0]["value"] + 10
    # dataset_meta's class names reach the report: the per-class table of the Markdown report
    assert_class_names_in_markdown(run, CLASSES, "mmseg", tmp_path / "md")


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_heads_left_at_the_base_models_19_classes_are_found(tmp_path, monkeypatch):
    run = _run(tmp_path, monkeypatch, FAULT_CONFIG)
    assert run.report is not None, run.describe()
    found = [f for f in run.report["findings"] if f["id"] == "config.num_classes_mismatch"]
    assert found, run.describe()
    ev = found[0]["evidence"]
    assert ev["out_channels"] == 19 and ev["num_classes"] == len(CLASSES), ev
    assert ev["num_classes_from"] == "mmseg class names", ev
    assert found[0]["severity"] == "error"
    assert run.contradictions() == []


# -- the rule behind it, on canned events (fast) -----------------------------------------

def _canned_event_helpers():
    """tests/test_state.py's event builder and feeder."""
    sys.path.insert(0, str(ROOT / "tests"))
    try:
        from test_state import Run, feed
    finally:
        sys.path.remove(str(ROOT / "tests"))
    return Run, feed


def test_framework_class_names_hold_the_head_to_their_count_without_a_config():
    Run, feed = _canned_event_helpers()

    def findings(names, source, out_channels, config=None):
        r = Run(C=out_channels)
        if names is not None:
            r.ev("probe", name="class_names", status="note", class_names=names, source=source, step=0)
        r.model(out_channels=out_channels)
        return feed(r.events, config)[0].findings

    f = findings(CLASSES, "mmseg", 19)["config.num_classes_mismatch"]
    assert f.evidence["num_classes"] == 6 and f.evidence["out_channels"] == 19
    assert f.evidence["num_classes_from"] == "mmseg class names"
    assert "config.num_classes_mismatch" not in findings(CLASSES, "mmseg", 6)
    assert "config.num_classes_mismatch" not in findings(None, None, 19)         # nothing to hold it to
    assert "config.num_classes_mismatch" not in findings(["bg", "fg"], "mmseg", 1)  # one sigmoid channel
