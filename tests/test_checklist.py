"""The live checklist: 9 items, pending -> ok / warn / fail from state and findings."""
from __future__ import annotations

import numpy as np

from segwatch.core.checklist import ITEMS, ChecklistItem, build_checklist
from segwatch.core.state import RunState
from test_state import C, Run, cfg, feed, healthy_run, label_hist

IDS = ["num_classes", "ignore_label", "learning_rate", "pretrained_loaded", "augmentation_keeps_labels",
       "loss_falling", "grad_norm_in_range", "predictions_diverse", "miou_changing"]


def states(st):
    return {c.id: c.state for c in st.checklist}


def test_items_and_titles():
    st = RunState(cfg())
    cl = st.checklist
    assert [c.id for c in cl] == IDS
    assert all(isinstance(c, ChecklistItem) and c.state == "pending" and c.evidence for c in cl)
    for c in cl:
        assert c.title("en") and c.title("zh") and c.title("en") != c.title("zh")
        d = c.to_dict("zh")
        assert set(d) >= {"id", "state", "evidence"}
    assert [i[0] for i in ITEMS] == IDS
    assert [c.phase for c in cl] == ["pre"] * 5 + ["run"] * 4


def test_healthy_run_all_ok():
    st, _ = feed(healthy_run().events, cfg())
    assert states(st) == {i: "ok" for i in IDS}, [c.to_dict() for c in st.checklist]
    assert build_checklist(st)[0].evidence.startswith("model outputs 37")


def test_failures_map_to_items():
    r = Run()
    r.model(out_channels=40)
    r.batch(1, hist=label_hist(np.random.RandomState(0)), oor={255: 900})
    r.state_dict(loaded=3, total=500)
    for s in range(1, 4):
        r.step(s, loss=float("nan"), grad_norm=1e-12, lr=[0.0])
    st, _ = feed(r.events, cfg())
    s = states(st)
    assert s["num_classes"] == "fail" and s["ignore_label"] == "fail"
    assert s["pretrained_loaded"] == "fail" and s["loss_falling"] == "fail"
    assert s["grad_norm_in_range"] == "fail" and s["learning_rate"] == "warn"
    ev = {c.id: c.evidence for c in st.checklist}
    assert "40" in ev["num_classes"] and "255" in ev["ignore_label"]


def test_out_of_range_fails_num_classes():
    r = Run()
    r.model()
    r.batch(1, hist=label_hist(np.random.RandomState(0)), oor={37: 10})
    assert states(feed(r.events, cfg())[0])["num_classes"] == "fail"


def test_auto_ignore_reports_inferred_value():
    r = Run()
    r.batch(1, hist=label_hist(np.random.RandomState(0)), ignore=0, ignore_value=None, oor={255: 500})
    st, _ = feed(r.events, cfg(dataset__ignore_index="auto"))
    item = st.checklist[1]
    assert item.state == "ok" and "255" in item.evidence


def test_pretrained_pending_then_warn():
    r = Run()
    for s in range(1, 5):
        r.step(s)
    st, _ = feed(r.events, cfg())
    assert states(st)["pretrained_loaded"] == "pending"
    r.ev("status", status="finished", exit_code=0)
    assert states(feed(r.events, cfg())[0])["pretrained_loaded"] == "warn"


def test_collapse_and_stuck_miou():
    r = Run()
    m = np.zeros((C, C), dtype=np.int64)
    m[:, 0] = label_hist(np.random.RandomState(0), C, 5000)
    for s in range(1, 301):
        r.step(s, loss=2.0)
        if s % 100 == 0:
            r.eval(s, m, index=s // 100 - 1)
    st, _ = feed(r.events, cfg())
    s = states(st)
    assert s["predictions_diverse"] == "fail" and s["miou_changing"] == "fail"
    assert s["loss_falling"] == "warn"  # loss.plateau


def test_low_diversity_warns_and_misalignment_fails():
    r = Run()
    for s in range(1, 12):
        r.batch(s, hist=label_hist(np.random.RandomState(s)), align=0.1, align_flipped=0.6)
    st, _ = feed(r.events, cfg())
    assert states(st)["augmentation_keeps_labels"] == "fail"


def test_evidence_follows_the_state_language():
    en, _ = feed(healthy_run(steps=120).events, cfg(), lang="en")
    zh, _ = feed(healthy_run(steps=120).events, cfg(), lang="zh")
    assert [c.state for c in en.checklist] == [c.state for c in zh.checklist]
    for a, b in zip(en.checklist, zh.checklist):
        assert a.evidence and b.evidence
    assert any(any("\u4e00" <= ch <= "\u9fff" for ch in c.evidence) for c in zh.checklist)
    assert not any(any("\u4e00" <= ch <= "\u9fff" for ch in c.evidence) for c in en.checklist)
    # every template formats in both languages with its own fields
    from segwatch.core.checklist import TEXT
    import string
    for key, (e, z) in TEXT.items():
        fe = {f for _, f, _, _ in string.Formatter().parse(e) if f}
        fz = {f for _, f, _, _ in string.Formatter().parse(z) if f}
        assert fe == fz, key


def test_items_follow_the_newest_evidence_with_its_step():
    """Issue 15: after a late collapse the checklist must not say "loss is falling" or
    "mIoU is changing" from the old half of the run; a newer diverse evaluation
    overrides an older collapse; "pending" only when nothing was measured."""
    from segwatch.core.metrics import miou_guide
    from test_state import eval_matrix

    rng = np.random.RandomState(3)
    r = Run()
    r.hello()
    r.model()
    for s in range(1, 641):
        r.batch(s, hist=label_hist(rng), ignore=300)
        r.step(s, loss=3.0 * np.exp(-s / 60) + 0.2 if s < 320 else 2.7)
        if s % 64 == 0:
            m = eval_matrix(rng, quality=0.8)
            if s >= 320:
                m = np.zeros((C, C), dtype=np.int64)
                m[:, 0] = label_hist(rng, C, 20000)
                m[3, 5] = 40                                   # a few stray pixels
            r.eval(s, m, index=s // 64 - 1)
            r.script_metric(round(miou_guide(m), 2), step=s)
    st, _ = feed(r.events, cfg())
    items = {c.id: c for c in st.checklist}
    # a loss that jumped from ~0.2 to 2.7 and stays there: loss.diverging names it (fail)
    assert items["loss_falling"].state == "fail" and "loss.diverging" in items["loss_falling"].evidence
    assert st.findings["loss.diverging"].evidence["why"] == "loss rose and stays high"
    assert items["predictions_diverse"].state == "fail" and items["predictions_diverse"].step == 640
    assert items["miou_changing"].state == "fail" and items["miou_changing"].evidence.startswith("falling")
    # a newer diverse evaluation is the newest evidence: the older collapse no longer decides
    st.ingest(r.eval(704, eval_matrix(rng, quality=0.8), index=11))
    items = {c.id: c for c in st.checklist}
    assert items["predictions_diverse"].state == "ok" and items["predictions_diverse"].step == 704
    assert "pred.collapse" in st.findings                        # the finding itself stays in the record


def test_few_classes_is_a_warning_not_pending():
    r = Run()
    r.model()
    ph = np.zeros(C, dtype=np.int64)
    ph[[0, 1]] = [300, 212]
    for s in range(1, 150):
        r.preds(s, ph, gt_hist=label_hist(np.random.RandomState(s)) // 8)
    st, _ = feed(r.events, cfg())
    it = {c.id: c for c in st.checklist}["predictions_diverse"]
    assert it.state == "warn" and "2 classes" in it.evidence and it.step == 149
    assert {c.id: c.state for c in RunState(cfg()).checklist}["predictions_diverse"] == "pending"
