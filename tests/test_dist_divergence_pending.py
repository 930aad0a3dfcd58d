"""dist.rank_divergence when the ranks sample the gradients at different periods (each rank's
sampler follows its own costs and the machine's load): the steps both ranks sampled must meet
however many steps one rank sampled alone in between, and whichever rank's events arrive late
(fast, in process)."""
from __future__ import annotations

import time

from segwatch.core.state import RunState


def _step(rank, step, gn):
    return {"v": 1, "type": "step", "t": time.time(), "rank": rank, "world_size": 2,
            "step": step, "loss": 1.0, "grad_norm": gn}


def _run(lag: int, rank_dense: int = 0, diverge: bool = True) -> RunState:
    """``rank_dense`` samples every step, the other rank every 32nd; the other rank's events
    arrive ``lag`` steps late. From step 200 on the sparse rank's gradients are doubled."""
    sparse = 1 - rank_dense
    st = RunState()
    late = []
    for s in range(1, 301):
        st.ingest(_step(rank_dense, s, 1.0))
        if s % 32 == 0:
            late.append((s + lag, _step(sparse, s, 2.0 if diverge and s >= 200 else 1.0)))
        while late and late[0][0] <= s:
            st.ingest(late.pop(0)[1])
    for _, ev in late:
        st.ingest(ev)
    return st


def test_common_steps_meet_when_one_rank_samples_every_step_and_the_other_lags():
    for rank_dense in (0, 1):
        for lag in (0, 5, 20, 40):
            f = _run(lag, rank_dense).findings.get("dist.rank_divergence")
            assert f is not None, (rank_dense, lag)
            assert f.evidence["kind"] == "grad_norm" and f.evidence["step"] == 288
            assert f.evidence["steps_diverged"] == 3


def test_no_divergence_when_gradients_agree_and_pending_steps_are_forgotten():
    st = _run(40, diverge=False)
    assert "dist.rank_divergence" not in st.findings
    rule = next(r for r in st._rules if r.id == "dist.rank_divergence")
    assert len(rule._by_step) <= 32      # steps every rank has passed are not kept
