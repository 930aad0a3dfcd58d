"""The run report: DESIGN.md's schema (keys, types), JSON, languages, actions."""
from __future__ import annotations

import json

import numpy as np

from segwatch.core.state import RunState
from test_state import Run, cfg, feed, healthy_run, label_hist

SEVERITIES = {"error", "warning", "info"}
STATES = {"ok", "warn", "fail", "pending"}


def faulty_events():
    r = healthy_run(steps=200)
    r.batch(201, hist=label_hist(np.random.RandomState(0)), oor={255: 700})
    r.step(202, loss=float("nan"), grad_nonfinite=4)
    r.ev("action", kind="pause", finding="loss.nonfinite", step=202, by="policy")
    r.ev("action", kind="resume", finding=None, step=202, by="user")
    r.ev("status", status="finished", exit_code=0)
    return r.events


def check_schema(rep: dict):
    assert rep["schema"] == "segwatch.report/1"
    for key in ("script", "exit_code", "steps", "action", "findings", "checklist", "miou"):
        assert key in rep
    assert rep["script"] is None or isinstance(rep["script"], str)
    assert rep["exit_code"] is None or isinstance(rep["exit_code"], int)
    assert isinstance(rep["steps"], int)
    a = rep["action"]
    assert a is None or (a["kind"] in ("pause", "kill") and "finding" in a and "step" in a)
    for f in rep["findings"]:
        assert isinstance(f["id"], str) and f["severity"] in SEVERITIES
        assert isinstance(f["first_step"], int) and f["phase"] in ("train", "val")
        assert isinstance(f["evidence"], dict) and isinstance(f["advice"], str) and f["advice"]
    for c in rep["checklist"]:
        assert isinstance(c["id"], str) and c["state"] in STATES and isinstance(c["evidence"], str)
    for pair in rep["miou"]:
        assert isinstance(pair, list) and len(pair) == 2
        assert isinstance(pair[0], int) and isinstance(pair[1], float)
    # strict JSON: no NaN/Infinity tokens
    text = json.dumps(rep, allow_nan=False)
    assert json.loads(text) == rep


def test_empty_state_report():
    rep = RunState().report()
    check_schema(rep)
    assert rep["findings"] == [] and rep["miou"] == [] and rep["action"] is None and rep["steps"] == 0
    assert len(rep["checklist"]) == 9


def test_report_schema_with_findings_and_action():
    st, _ = feed(faulty_events(), cfg())
    rep = st.report()
    check_schema(rep)
    assert rep["script"] == "train.py" and rep["exit_code"] == 0 and rep["steps"] == 202
    assert rep["action"] == {"kind": "pause", "finding": "loss.nonfinite", "step": 202, "by": "policy"}
    fids = [f["id"] for f in rep["findings"]]
    assert "label.ignore_mismatch" in fids and "loss.nonfinite" in fids and "grad.nonfinite" in fids
    nf = next(f for f in rep["findings"] if f["id"] == "loss.nonfinite")
    assert nf["evidence"]["loss"] == "nan"
    assert [p[0] for p in rep["miou"]] == [100, 200]
    assert len(rep["miou_mmseg"]) == 2
    assert rep["script_metrics"][0][0] == 100
    # exit_code given at report time wins
    assert st.report(exit_code=137)["exit_code"] == 137


def test_kill_is_the_decisive_action():
    r = Run()
    r.ev("action", kind="pause", finding="pred.collapse", step=5, by="policy")
    r.ev("action", kind="kill", finding="pred.collapse", step=9, by="user")
    r.ev("action", kind="pause", finding=None, step=10, by="user")
    st, _ = feed(r.events, cfg())
    assert st.report()["action"]["kind"] == "kill"


def test_report_languages():
    en, _ = feed(faulty_events(), cfg(), lang="en")
    zh, _ = feed(faulty_events(), cfg(), lang="zh")
    ren, rzh = en.report(), zh.report()
    check_schema(rzh)
    a_en = {f["id"]: f["advice"] for f in ren["findings"]}
    a_zh = {f["id"]: f["advice"] for f in rzh["findings"]}
    assert a_en.keys() == a_zh.keys()
    for k in a_en:
        assert a_en[k] != a_zh[k]
    assert "ignore_index" in a_en["label.ignore_mismatch"] and "255" in a_en["label.ignore_mismatch"]
    assert any("\u4e00" <= ch <= "\u9fff" for ch in a_zh["label.ignore_mismatch"])
    assert [c["title"] for c in rzh["checklist"]] != [c["title"] for c in ren["checklist"]]


def test_report_extensions_and_roundtrip_through_wire():
    from segwatch.protocol import encode, decode
    events = faulty_events()
    lines = [encode(e) for e in events]
    st, _ = feed([decode(x) for x in lines], cfg())
    rep = st.report()
    for key in ("miou_mmseg", "inferred_ignore", "overhead", "probes_disabled", "dropped", "script_metrics"):
        assert key in rep
    assert rep["inferred_ignore"] == 255


def test_advice_names_this_runs_values():
    from segwatch.core.advice import advice_text
    st, _ = feed(faulty_events(), cfg())
    adv = {f["id"]: f["advice"] for f in st.report()["findings"]}
    assert adv["label.ignore_mismatch"].endswith("Here: the labels use 255, the config says -1.")
    # missing or odd evidence never breaks the text
    base = advice_text("pred.collapse", "en")
    assert advice_text("pred.collapse", "en", {}) == base
    assert advice_text("pred.collapse", "en", {"class": 3, "share": "x"}) == base
    assert advice_text("no.such.id", "zh")


def test_miou_falls_back_to_the_scripts_values():
    r = Run()
    r.script_metric(12.5, step=10)
    r.script_metric(20.25, step=20)
    rep = feed(r.events, cfg())[0].report()
    check_schema(rep)
    assert rep["miou"] == [[10, 12.5], [20, 20.25]] and rep["miou_source"] == "script"
    st, _ = feed(faulty_events(), cfg())
    assert st.report()["miou_source"] == "segwatch"
