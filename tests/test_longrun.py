"""Long runs: a replay of a long stored event stream rebuilds the state that live ingestion
built, and the store's fast line decoder counts exactly what the protocol's decoder counts.

The stream is synthetic (no training): 5,000 steps sampled the way the shim samples after
its dense start (the loss every step here, batch and predictions every 32 steps), so the
ring buffers wrap and their thinned history is exercised; evaluations, script mIoU lines,
supervisor events, and two faults late in the run so that findings exist.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from test_state import C, Run, cfg, eval_matrix, label_hist

from segwatch.protocol import MAX_LINE_BYTES, LineDecoder, make_event
from segwatch.supervisor.corelink import SafeState, config_to_dict
from segwatch.supervisor.replay import Replayed
from segwatch.supervisor.store import RunStore, decode_lines

STEPS = 5000


def long_stream(steps: int = STEPS) -> list[dict]:
    rng = np.random.RandomState(3)
    r = Run(C)
    r.ev("status", status="starting", pid=None, exit_code=None)
    r.ev("status", status="running", pid=4242, exit_code=None)
    r.hello()
    r.model()
    ev_i = 0
    for s in range(1, steps + 1):
        if s <= 20 or s % 32 == 0:
            lh = label_hist(rng, C)
            oor = {255: 900} if s >= 4600 else None          # fault: labels carry 255
            r.batch(s, hist=lh, ignore=300, oor=oor, align=float(rng.uniform(0.5, 0.7)),
                    align_flipped=float(rng.uniform(0.1, 0.3)), index=s % 100, epoch=s // 100)
            ph = np.zeros(C, dtype=np.int64)
            k = min(C, 3 + s // 40)
            ph[:k] = rng.multinomial(512 - k, np.ones(k) / k) + 1
            r.preds(s, ph, gt_hist=lh // 8)
        loss = 3.5 * math.exp(-s / 600.0) + 0.4 + rng.normal(0, 0.03)
        if s == 4800:
            loss = float("nan")                              # fault: one non-finite loss
        r.step(s, loss=loss, grad_norm=float(rng.uniform(2, 8)), epoch=s // 100)
        if s % 500 == 0:
            m = eval_matrix(rng, quality=min(0.9, 0.3 + 0.05 * ev_i), C=C)
            r.eval(s, m, index=ev_i)
            from segwatch.core.metrics import miou_guide
            r.ev("output", stream="stdout", line=f"step {s} mIoU: {miou_guide(m):.2f}")
            r.script_metric(round(miou_guide(m), 2), step=s)
            ev_i += 1
        if s % 200 == 0:
            r.ev("overhead", step=s, share=0.008, budget=0.01, dropped=0,
                 intervals={"batch": 32, "preds": 32, "grads": 32, "update": 32, "readback": 10})
            r.ev("proc", cpu=97.0, rss=400 << 20, procs=1, gpu_mem=None)
    r.ev("bye", step=steps, dropped=0, events=len(r.events), share=0.008, disabled=[], reason="finished")
    r.ev("status", status="finished", exit_code=0, pid=4242)
    return r.events


def live_run(run_dir, events: list[dict], config) -> SafeState:
    """What the supervisor does with each event: store it, then ingest it; a new finding is
    stored and ingested as a ``finding`` event too."""
    store = RunStore(run_dir)
    store.write_meta(status="finished", exit_code=0, lang="en", config_resolved=config_to_dict(config))
    state = SafeState(config, "en")
    for ev in events:
        store.append(ev)
        for f in state.ingest(ev):
            d = f.to_dict("en")
            mirror = make_event("finding", t=ev["t"], **{k: v for k, v in d.items() if k not in ("v", "type", "t")})
            store.append(mirror)
            state.ingest(mirror)
    store.close()
    return state


@pytest.mark.slow
def test_replay_of_a_long_stream_rebuilds_the_live_state(tmp_path):
    config = cfg(policy__grace_steps=20)
    events = long_stream()
    live = live_run(tmp_path / "run", events, config)
    rep = Replayed(tmp_path / "run")

    assert rep.invalid == 0 and rep.state.errors == 0 and live.errors == 0
    assert rep.events >= len(events)
    assert rep.state.step == live.step == STEPS
    # the ring buffers wrapped (more step events than their capacity) and hold the same pairs
    assert live.loss.total == STEPS > live.loss.capacity
    for name in ("loss", "grad_norm", "pred_unique"):
        a, b = getattr(live, name), getattr(rep.state, name)
        assert np.array_equal(a.steps(), b.steps()), name
        assert np.array_equal(a.values(), b.values(), equal_nan=True), name
        sa, sb = a.span(), b.span()
        assert all(np.array_equal(x, y, equal_nan=True) for x, y in zip(sa, sb)), name
    # the same findings, raised at the same steps, and the same report
    assert {"label.ignore_mismatch", "loss.nonfinite"} <= set(live.findings)
    assert {k: f.first_step for k, f in live.findings.items()} == \
           {k: f.first_step for k, f in rep.state.findings.items()}
    live_report, replayed = live.report(0), rep.state.report(0)
    assert json.dumps(live_report, sort_keys=True, default=str) == json.dumps(replayed, sort_keys=True, default=str)
    assert len(replayed["miou"]) == STEPS // 500


def test_safe_state_builds_core_at_first_use_and_keeps_the_order():
    """The supervisor's state holds its first status events until core is needed; what it
    then shows is what a state built at once shows."""
    config = cfg()
    events = long_stream(300)
    lazy, eager = SafeState(config, "en"), SafeState(config, "en")
    eager.step   # any attribute read builds the state
    assert lazy.ingest(events[0]) == [] and lazy.ingest(events[1]) == []
    assert lazy._inner is None, "status events alone should not build core's state"
    for ev in events[2:]:
        lazy.ingest(ev)
    for ev in events:
        eager.ingest(ev)
    assert lazy._inner is not None
    assert lazy.status == eager.status == "finished"
    assert json.dumps(lazy.report(0), sort_keys=True, default=str) == \
           json.dumps(eager.report(0), sort_keys=True, default=str)


def _encoded(events: list[dict]) -> bytes:
    from segwatch.protocol import encode

    return b"".join(encode(e) for e in events)


def test_fast_decoder_counts_what_the_line_decoder_counts():
    good = _encoded(long_stream(40))
    half = good.index(b"\n", len(good) // 2) + 1
    junk = (b"not json\n" + b"\n" + b"   \n" + b'{"v": 1, "type": "step"}\n'          # invalid, blank, blank, no t/step
            + b'{"v": 99, "type": "step", "t": 1, "step": 1}\n' + b"\xff\xfe\n"
            + b'{"v":1,"type":"output","t":1.0,"stream":"stdout","line":"' + b"x" * (MAX_LINE_BYTES + 10) + b'"}\n')
    data = good[:half] + junk + good[half:] + b'{"v":1,"type":"status","t":2.0,"status":"lost"}'
    # cut into chunks at awkward places: inside lines, inside the oversized line, at newlines
    rng = np.random.RandomState(0)
    cuts = sorted(set(rng.randint(1, len(data), size=60).tolist() + [half + 30, half + 200_000]))
    chunks = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)])]

    ref, fast = LineDecoder(), LineDecoder()
    want = [ev for c in chunks for ev in ref.feed(c)] + list(ref.feed(b"\n"))
    got = [ev for c in chunks for ev in decode_lines(c, fast)] + list(fast.feed(b"\n"))
    assert got == want
    assert len(want) == len(long_stream(40)) + 1
    assert (fast.invalid, fast.oversized, fast.errors) == (ref.invalid, ref.oversized, ref.errors)
    assert ref.invalid == 5 and ref.oversized == 1


def test_store_events_reads_a_last_line_without_newline(tmp_path):
    store = RunStore(tmp_path / "run")
    events = long_stream(40)
    for ev in events:
        store.append(ev)
    store.close()
    with open(store.events_path, "ab") as fh:
        fh.write(b'{"v":1,"type":"status","t":2.0,"status":"lost"}')   # cut off by a crash
    counter = LineDecoder()
    got = list(RunStore(tmp_path / "run", create=False).events(counter))
    assert got[:-1] == events and got[-1]["status"] == "lost" and counter.invalid == 0
