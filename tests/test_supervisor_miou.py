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
