"""A framework's sanity evaluation (Lightning runs 1-2 validation batches before training) stays
in the events and in ``evals`` but is not a point of the mIoU history: not in report["miou"],
not the "best" of the regression rule, not a value of the stuck rule."""
from __future__ import annotations

import numpy as np

from segwatch.core.report import build_report
from test_state import C, Run, cfg, feed


def perfect():
    return np.eye(C, dtype=int) * 100


def middling():
    m = np.eye(C, dtype=int) * 40
    m[:, 0] += 60
    return m


def eval_ev(r: Run, step, matrix, batches, expected, index, **extra):
    m = [[int(x) for x in row] for row in matrix]
    r.ev("eval", step=step, index=index, batches=batches, expected=expected, aborted=False, exception=None,
         num_classes=C, ignore_index=-1, matrix=m, oor=0, size_mismatch=0, pixels=int(matrix.sum()), **extra)


def run_with_first_eval(batches, expected, **extra):
    r = Run()
    r.model(out_channels=C)
    eval_ev(r, 0, perfect(), batches, expected, 0, **extra)     # the untrained model, lucky on one batch
    for i, s in enumerate((10, 20, 30)):
        r.step(s, loss=1.0)
        eval_ev(r, s, middling(), 4, 4, i + 1)
    return feed(r.events, cfg())[0]


def test_partial_pass_before_training_is_a_sanity_check():
    st = run_with_first_eval(1, 4)
    assert [e["sanity"] for e in st.evals] == [True, False, False, False]
    assert [s for s, _, _ in st.miou] == [10, 20, 30]
    assert "metric.miou_regressed" not in st.findings
    assert [s for s, _ in build_report(st)["miou"]] == [10, 20, 30]


def test_adapter_flag_marks_it_whatever_its_size():
    st = run_with_first_eval(4, 4, sanity=True)
    assert st.evals[0]["sanity"] and [s for s, _, _ in st.miou] == [10, 20, 30]
    assert "metric.miou_regressed" not in st.findings


def test_a_full_baseline_evaluation_at_step_0_counts():
    # a whole pass over the loader before training is a real baseline: it stays a point (and
    # here its 100 % is the best the later evaluations fell from)
    st = run_with_first_eval(4, 4)
    assert not st.evals[0]["sanity"] and [s for s, _, _ in st.miou] == [0, 10, 20, 30]
    assert "metric.miou_regressed" in st.findings
