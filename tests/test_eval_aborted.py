"""metric.eval_aborted says what the run did after the exception: swallowed (training went on,
or the script ended normally) or ended the run, and then defers to a finding naming the cause."""
from __future__ import annotations

import numpy as np

from segwatch.core.advice import advice_text, finding_title
from segwatch.core.checklist import build_checklist
from test_rules import warm
from test_state import Run, cfg, eval_matrix, feed

EXC = {"type": "IndexError", "message": "Target 255 is out of bounds.", "where": "train.py:88"}


def aborted_at(r: Run, step: int) -> None:
    r.eval(step, eval_matrix(np.random.RandomState(0), 0.5), aborted=True, exception=EXC)


def test_training_going_on_means_swallowed():
    r = Run()
    warm(r, 20)
    aborted_at(r, 20)
    st, _ = feed(r.events, cfg())
    assert st.findings["metric.eval_aborted"].evidence["outcome"] == "raised"   # not known yet
    r.step(21)
    st, _ = feed(r.events, cfg())
    f = st.findings["metric.eval_aborted"]
    assert f.evidence["outcome"] == "swallowed" and f.severity == "error" and f.count == 1
    assert "caught and logged" in f.advice("en") and "捕获" in f.advice("zh")


def test_normal_end_after_a_final_evaluation_means_swallowed():
    r = Run()
    warm(r, 20)
    aborted_at(r, 20)
    r.ev("bye", step=20, reason="finished")
    f = feed(r.events, cfg())[0].findings["metric.eval_aborted"]
    assert f.evidence["outcome"] == "swallowed"


def test_run_ended_by_that_exception_is_not_called_swallowed():
    r = Run()
    warm(r, 20)
    aborted_at(r, 20)
    r.ev("bye", step=20, reason="exception: IndexError: Target 255 is out of bounds.")
    st, _ = feed(r.events, cfg())
    f = st.findings["metric.eval_aborted"]
    assert f.evidence["outcome"] == "ended_run" and f.severity == "error"   # no other cause known
    for lang in ("en", "zh"):
        text = f.advice(lang)
        assert "swallow" not in text and "吞" not in text and "IndexError" in text
        assert "吞" not in finding_title(f.id, "zh") and "swallow" not in finding_title(f.id, "en")
    assert "did not catch it" in f.advice("en") and "没有捕获" in f.advice("zh")
    item = next(c for c in build_checklist(st) if c.id == "miou_changing")
    assert "ended" in item.evidence


def test_run_ended_with_another_exception_still_swallowed_the_first():
    r = Run()
    warm(r, 20)
    aborted_at(r, 20)
    r.ev("bye", step=20, reason="exception: KeyError: 'x'")
    assert feed(r.events, cfg())[0].findings["metric.eval_aborted"].evidence["outcome"] == "swallowed"


def test_a_named_cause_takes_the_blame():
    r = Run()
    r.model(out_channels=40)                  # config.num_classes_mismatch: an error naming a cause
    warm(r, 20)
    aborted_at(r, 20)
    r.ev("bye", step=20, reason="exception: IndexError: Target 255 is out of bounds.")
    st, _ = feed(r.events, cfg())
    cause = st.findings["config.num_classes_mismatch"]
    assert cause.severity == "error"
    f = st.findings["metric.eval_aborted"]
    assert f.evidence["cause"] == "config.num_classes_mismatch" and f.severity == "info"
    assert "config.num_classes_mismatch" in advice_text(f.id, "en", f.evidence)
    assert "config.num_classes_mismatch" in advice_text(f.id, "zh", f.evidence)
