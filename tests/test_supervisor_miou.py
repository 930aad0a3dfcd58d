"""Parsing the mIoU a script prints (the rule is in segwatch/supervisor/miou_parse.py)."""
from __future__ import annotations

import pytest

from segwatch.supervisor.miou_parse import parse_miou


@pytest.mark.parametrize("line,value", [
    ("mIoU: 12.3", 12.3),
    ("miou=0.123", 12.3),                       # a fraction without % -> x100
    ("mIoU 2.70%", 2.7),
    ("Mean IoU: 45.2", 45.2),
    ("mean IoU is 3", 3.0),
    ("mean_iou = 0.41", 41.0),
    ("MIOU:55", 55.0),
    ("{'aAcc': 80.1, 'mIoU': 45.2, 'mAcc': 50}", 45.2),
    ('{"mIoU": 0.452}', 45.2),
    ("val/mIoU 38.0", 38.0),
    ("mIoU(%): 38.0", 38.0),
    ("mIoU (%) 0.5", 0.5),                      # the key says percent: no x100
    ("mIoU: tensor(0.4100)", 41.0),
    ("Epoch 3 | loss 0.3 | mIoU=27.05 %", 27.05),
    ("mIoU 0.5%", 0.5),
    ("mIoU: 1.0", 100.0),
    ("mIoU: 2.7027", 2.7027),
    ("best mIoU: 50.0, mIoU: 40.0", 40.0),      # 'best' is not the current evaluation
    ("[eval] step 300 miou 1.2e+01", 12.0),
])
def test_parsed(line, value):
    assert parse_miou(line) == pytest.approx(value)


@pytest.mark.parametrize("line", [
    "mIoU does not grow after 5 epochs",
    "mIoU_best: 3",
    "class IoU 33.1",
    "per-class IoU: [0.1, 0.2]",
    "mIoU: nan",
    "mIoU: inf",
    "miou: 150",
    "mIoU: -3",
    "best mIoU: 50",
    "loss 0.25 acc 0.9",
    "",
])
def test_not_parsed(line):
    assert parse_miou(line) is None


# ---------------------------------------------------------------- the scale of values <= 1
from segwatch.supervisor.miou_parse import MiouResolver  # noqa: E402


def test_resolver_unambiguous_values_are_immediate():
    r = MiouResolver()
    [f] = r.line("mIoU 0.70%", 10, 0.0)
    assert f["value"] == 0.70 and f["scale_by"] == "sign"
    assert r.scale is None                      # a sign says nothing about the next line
    [f] = r.line("mIoU: 45.2", 20, 0.0)
    assert f["value"] == 45.2 and f["scale_by"] == "range"
    assert r.scale == "percent"                 # this script prints percent
    [f] = r.line("mIoU: 0.70", 30, 0.0)
    assert f["value"] == 0.70 and f["scale_by"] == "run"


def test_resolver_eval_before_line_guide_style_percent():
    # the guide's code: miou*100, round(., 2) -> "mIoU: 0.70" means 0.70 %
    r = MiouResolver()
    assert r.evaluation(0.6981, 0.8071, 1.0) == []
    [f] = r.line("epoch 2: mIoU: 0.70", 200, 1.1)
    assert f["value"] == pytest.approx(0.70) and f["scale"] == "percent" and f["scale_by"] == "eval"
    assert f["step"] == 200 and f["raw"] == 0.70
    assert r.scale == "percent"


def test_resolver_line_before_eval_fraction_style():
    r = MiouResolver()
    assert r.line("miou=0.4123", 300, 5.0) == []      # waits for segwatch's evaluation
    [f] = r.evaluation(41.0, 44.0, 5.2)
    assert f["value"] == pytest.approx(41.23) and f["scale"] == "fraction" and f["step"] == 300
    assert r.scale == "fraction"
    [f] = r.line("miou=0.5", 400, 9.0)               # known from now on
    assert f["value"] == 50.0 and f["scale_by"] == "run"


def test_resolver_without_evaluation_defaults_to_fraction():
    r = MiouResolver(wait=3.0)
    assert r.line("mIoU: 0.25", 7, 10.0) == []
    assert r.due(12.0) == []
    [f] = r.due(13.5)
    assert f["value"] == 25.0 and f["scale_by"] == "default"
    [f] = r.line("mIoU: 0.3", 8, 20.0)                # decided by default: fixed for the run
    assert f["value"] == 30.0 and f["scale_by"] == "run"


def test_resolver_an_eval_is_used_once():
    r = MiouResolver()
    r.evaluation(0.7, 0.8, 0.0)
    assert r.line("mIoU: 0.70", 1, 0.1)[0]["scale_by"] == "eval"
    r2 = MiouResolver()
    r2.evaluation(30.0, 31.0, 0.0)   # neither reading is close; the closer one still decides
    [f] = r2.line("mIoU: 0.9", 1, 0.1)
    assert r2.scale == "percent" and f["scale_by"] == "eval"
    [f] = r2.line("mIoU: 0.1", 2, 0.2)               # the same scale for the rest of the run
    assert f["value"] == pytest.approx(0.1) and f["scale_by"] == "run"


def test_resolver_scale_once_decided_stays_fixed_whatever_the_next_evaluation_says():
    r = MiouResolver()
    r.evaluation(0.6981, 0.8071, 0.0)                # guide style: 0.70 means 0.70 %
    assert r.line("epoch 1: mIoU: 0.70", 100, 0.1)[0]["scale"] == "percent"
    r.evaluation(55.0, 56.0, 5.0)                    # an evaluation that would argue for fraction
    for step in (200, 300):
        [f] = r.line("epoch 1: mIoU: 0.55", step, 5.1)
        assert f["scale"] == "percent" and f["value"] == pytest.approx(0.55), f
    # only a value that cannot be a fraction changes it
    r = MiouResolver()
    r.line("miou=0.41", 1, 0.0)
    assert r.due(0.0, final=True)[0]["scale"] == "fraction"
    assert r.line("miou=41.5", 2, 1.0)[0]["scale"] == "percent"
