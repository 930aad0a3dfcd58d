"""Issue 3: a training that dies on out-of-range labels (targets up to 37 with 37 classes)
still leaves a report naming the cause, found before the crash; segwatch exits as the child did."""
import json
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
FAULTS = ROOT / "tests" / "faults"


@pytest.mark.slow
def test_out_of_range_labels_found_before_the_crash(tmp_path):
    report = tmp_path / "r.json"
    proc = subprocess.run(
        [sys.executable, "-m", "segwatch", "run", "--headless", "--report", str(report),
         "--run-dir", str(tmp_path / "run"), "--config", str(FAULTS / "configs" / "sunrgbd37.yaml"),
         str(FAULTS / "fault_labels_off_by_one.py")],
        capture_output=True, text=True, timeout=120,
    )
    stderr_log = (tmp_path / "run" / "stderr.log").read_text()
    assert "out of bounds" in stderr_log  # the script really crashed in CrossEntropyLoss
    assert proc.returncode == 1
    rep = json.loads(report.read_text())
    assert rep["exit_code"] == 1
    f = next(f for f in rep["findings"] if f["id"] == "label.out_of_range")
    assert f["severity"] == "error"
    assert "37" in json.dumps(f["evidence"])
    assert f["first_step"] <= rep["steps"]  # seen on a batch before the training died
