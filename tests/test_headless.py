"""The headless view: status lines quote RunState's readings with their age, are not
repeated when nothing was measured anew, and never get glued onto a child's open line
(a tqdm bar ending in ``\\r``)."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from segwatch.core.state import RunState
from segwatch.supervisor.headless import StatusLines, status_line
from test_state import C, Run, cfg, label_hist


def _run_to(r: Run, start: int, stop: int, sampled_until: int) -> None:
    rng = np.random.RandomState(start)
    for s in range(start, stop + 1):
        if s <= sampled_until:
            r.batch(s, hist=label_hist(rng))
            ph = np.zeros(C, dtype=np.int64)
            ph[:11] = 40
            r.preds(s, ph)
            r.step(s, loss=0.4861, grad_norm=2.0)
        elif s % 10 == 0:
            r.ev("step", step=s, loss=1.0 + s / 1000, grad_norm=None, lr=[8e-5], sampled=False)


def test_status_line_says_the_step_of_old_values():
    r = Run()
    r.hello()
    r.model()
    _run_to(r, 1, 640, sampled_until=82)
    st = RunState(config=cfg())
    st.ingest_many(r.events)
    line = status_line(st, "running")
    assert line.startswith("[segwatch] step 640 | loss 1.64 |"), line    # the read-back is current
    assert "grad 2.0e+00 @ step 82" in line and "pred classes 11/37 @ step 82" in line, line
    assert "loss 1.64 @" not in line
    zh = status_line(st, "running", lang="zh")
    assert "（第 82 步的值）" in zh and " step " not in zh


def test_status_lines_are_not_repeated_when_nothing_was_measured():
    r = Run()
    r.hello()
    r.model()
    _run_to(r, 1, 30, sampled_until=30)
    st = RunState(config=cfg())
    st.ingest_many(r.events)
    lines = StatusLines(heartbeat=5)
    first = lines.next(st, "running")
    assert first and "step 30" in first
    # no event in between: the same values are not printed again, except as a heartbeat
    assert [lines.next(st, "running") for _ in range(4)] == [None] * 4
    assert lines.next(st, "running") == first
    # the step advances without a new measurement of anything shown: still quiet
    st.ingest(r.batch(31, hist=label_hist(np.random.RandomState(1))))
    assert lines.next(st, "running") is None
    # a new loss read-back is news
    st.ingest(r.ev("step", step=40, loss=0.3, grad_norm=None, lr=[8e-5], sampled=False))
    news = lines.next(st, "running")
    assert news and "step 40 | loss 0.3 |" in news
    # and so is a status change
    assert lines.next(st, "paused")


BAR_SCRIPT = textwrap.dedent("""
    import sys, time
    out = getattr(sys, sys.argv[1])
    for i in range(80):
        out.write(f"\\r{i}/80 [00:00<?, ?it/s]")
        out.flush()
        time.sleep(0.1)
    out.write("\\n")
    print("done", flush=True)
""")


@pytest.mark.slow
@pytest.mark.parametrize("bar_on", ["stderr", "stdout"])
def test_headless_lines_start_on_a_fresh_line_after_a_progress_bar(tmp_path, bar_on):
    """The raw bytes of a terminal that gets both streams (stdout bar: stderr merged into
    stdout) or of stderr alone (stderr bar): every ``[segwatch]`` starts a line."""
    script = tmp_path / "bar.py"
    script.write_text(BAR_SCRIPT)
    cmd = [sys.executable, "-m", "segwatch", "run", "--headless", "--no-shim", "--interval", "0.5",
           "--run-dir", str(tmp_path / "run"), str(script), "--", bar_on]
    if bar_on == "stdout":
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)
        raw = p.stdout
    else:
        p = subprocess.run(cmd, capture_output=True, timeout=120)
        raw = p.stderr
    assert p.returncode == 0, raw[-2000:]
    starts = [i for i in range(len(raw)) if raw.startswith(b"[segwatch]", i)]
    assert starts, raw[-2000:]
    glued = [raw[max(0, i - 40):i + 20] for i in starts if i > 0 and raw[i - 1:i] != b"\n"]
    assert not glued, glued
    # ~16 status intervals with nothing measured (no shim): the waiting line is not repeated
    # at each of them, only as a heartbeat (every 10th)
    assert raw.count(b"waiting for the first training step") <= 4, raw.count(b"waiting for the first")
    # at least one line came while the bar was open, and was moved onto a line of its own
    assert any(raw[i - 2:i - 1] not in (b"\n", b"") for i in starts if i >= 2), raw[:3000]
