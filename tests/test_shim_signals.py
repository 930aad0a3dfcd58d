"""The shim's signals for the slow-burn rules (issue 15), on real tiny trainings.

``step.grad_before_backward`` / ``step.backwards_since_step`` (gradients not reset between
optimizer steps vs intended accumulation), ``step.lr_applied`` (the LR the update used),
``step.scheduler`` (which scheduler's ``step()`` is called, how often), and
``preds.value_range`` / ``preds.channel_sum_dev`` (the model outputs probabilities).
"""
from __future__ import annotations

from pathlib import Path

import pytest

from test_shim import of, run_shim

SCRIPT = Path(__file__).parent / "shim_scripts" / "train_signals.py"
CFG = {"dataset": {"num_classes": 4, "ignore_index": 255, "class_names": None},
       "sampling": {"overhead_budget": 0.01}}


def _run(tmp_path, *args, debug=True):
    # debug: every step sampled, so each step's signal can be checked (the values are those
    # of the default schedule on the steps it samples)
    proc, ev = run_shim(tmp_path, SCRIPT, *args, config=CFG, env={"SEGWATCH_DEBUG": "1"} if debug else None)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert ev[-1]["type"] == "bye" and ev[-1]["disabled"] == [], ev[-1]
    return ev


def _sampled(ev):
    return [e for e in of(ev, "step") if e.get("sampled")]


@pytest.mark.slow
def test_healthy_run_has_no_leftover_gradients_and_logits_are_not_probabilities(tmp_path):
    ev = _run(tmp_path, "--steps", "30")
    st = _sampled(ev)
    assert len(st) == 30
    assert all(e["backwards_since_step"] == 1 for e in st)
    # zero_grad() after every step: nothing left over before the next backward
    assert all(e["grad_before_backward"] == 0.0 for e in st), [e["grad_before_backward"] for e in st]
    assert all(e["scheduler"] is None for e in st)
    assert all(e["lr_applied"] == [0.05] for e in st)
    pr = [e for e in of(ev, "preds") if e["phase"] == "train"]
    assert pr and all(e["value_range"] is not None for e in pr)
    # raw logits: negative values, and the class-dim sums are far from 1
    assert any(e["value_range"][0] < 0 for e in pr)
    assert all(e["channel_sum_dev"] > 0.01 for e in pr)


@pytest.mark.slow
def test_gradients_never_reset_are_seen_before_backward(tmp_path):
    ev = _run(tmp_path, "--steps", "30", "--no-zero-grad")
    st = _sampled(ev)
    first = [e for e in st if e["step"] == 1]
    assert first and first[0]["grad_before_backward"] == 0.0          # none yet at step 1
    later = [e for e in st if e["step"] > 1]
    assert later and all(e["grad_before_backward"] > 0 for e in later)
    assert all(e["backwards_since_step"] == 1 for e in st)


@pytest.mark.slow
def test_intended_accumulation_counts_backwards_and_resets(tmp_path):
    ev = _run(tmp_path, "--steps", "32", "--accum", "4")
    st = _sampled(ev)
    by = {e["step"]: e for e in st}
    assert {by[s]["backwards_since_step"] for s in by} == {1, 2, 3, 4}
    for s, e in by.items():
        assert e["backwards_since_step"] == (s - 1) % 4 + 1
        if e["backwards_since_step"] == 1:
            assert e["grad_before_backward"] == 0.0
        else:
            assert e["grad_before_backward"] is None
        # the update happens on every 4th backward only
        assert (e["lr_applied"] is not None) == (s % 4 == 0)


@pytest.mark.slow
def test_lr_set_after_step_shows_in_lr_applied_of_the_first_steps(tmp_path):
    ev = _run(tmp_path, "--steps", "30", "--lr-after-step", debug=False)     # always, at default
    applied = {}
    for e in of(ev, "step"):
        if e.get("lr_applied") is not None:
            applied.setdefault(e["step"], e["lr_applied"])
    # step 1 ran at the constructor's LR (the warm-up was skipped), step 2 at warm-up(0) = 0
    assert applied[1] == [0.05]
    assert applied[2] == [0.0]
    assert applied[3] == pytest.approx([0.005])


@pytest.mark.slow
def test_scheduler_stepped_per_iteration_is_counted(tmp_path):
    ev = _run(tmp_path, "--steps", "30", "--steplr")
    st = _sampled(ev)
    with_sched = [e for e in st if e["scheduler"] is not None]
    assert with_sched
    for e in with_sched:
        assert e["scheduler"]["cls"] == "StepLR"
        # recorded at the backward of step s: the scheduler was stepped after steps 1..s-1
        assert e["scheduler"]["steps_total"] == e["step"] - 1
    assert len(with_sched) == 29 and [e["step"] for e in st if e["scheduler"] is None] == [1]


@pytest.mark.slow
def test_softmax_output_is_a_probability_signature(tmp_path):
    ev = _run(tmp_path, "--steps", "30", "--softmax")
    pr = [e for e in of(ev, "preds") if e["phase"] == "train"]
    assert pr
    for e in pr:
        lo, hi = e["value_range"]
        assert 0.0 <= lo and hi <= 1.0
        assert e["channel_sum_dev"] < 1e-4


def test_lr_applied_of_the_first_optimizer_steps_is_sent_when_no_probe_samples_them():
    import torch
    import torch.nn as nn

    from segwatch.shim import MemoryEmitter, Shim

    torch.manual_seed(0)
    model = nn.Conv2d(3, 4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    shim = Shim(MemoryEmitter(), CFG, debug=False, script=__file__)
    shim.sampler.dense["grads"] = 8           # steps 1..7 are not sampled by the grads probe
    shim.install()
    try:
        for _ in range(5):
            loss = model(torch.randn(2, 3, 4, 4)).square().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        shim.uninstall(finish=True)
    first = {}
    for e in of(shim.emitter.items, "step"):
        first.setdefault(e["step"], e)
    for s in (1, 2, 3):
        e = first[s]
        assert e["sampled"] is False and e["lr_applied"] == [0.05] and e["lr"] == [0.05], e
        assert e["loss"] is not None and e["grad_norm"] is None
    assert all(e.get("lr_applied") is None for e in of(shim.emitter.items, "step") if e["step"] in (4, 5))


def test_first_nonfinite_loss_between_samples_dates_the_finding():
    """A loss that turns NaN at step 29 (no probe samples it) is read back with step 32,
    which the grads probe samples: the events of that read-back arrive in step order, so
    ``loss.nonfinite`` names step 29, not 32."""
    import torch
    import torch.nn as nn

    from segwatch.core.state import RunState
    from segwatch.shim import MemoryEmitter, Shim

    torch.manual_seed(0)
    model = nn.Conv2d(3, 4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    shim = Shim(MemoryEmitter(), CFG, debug=False, script=__file__)
    shim.install()
    try:
        for step in range(1, 41):
            loss = model(torch.randn(2, 3, 4, 4)).square().mean()
            if step >= 29:
                loss = loss * float("nan")
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        shim.uninstall(finish=True)
    steps = [e["step"] for e in of(shim.emitter.items, "step")]
    assert 29 in steps and 32 in steps
    assert steps.index(29) < steps.index(32)
    st = RunState(config=CFG)
    for e in shim.emitter.items:
        st.ingest(e)
    f = st.findings["loss.nonfinite"]
    assert f.first_step == 29, f.first_step
