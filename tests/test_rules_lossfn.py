"""The loss as a cause, on canned events: ``lossfn`` in the evidence and advice of the findings
it can explain, and ``loss.ignore_index_mismatch``."""
from __future__ import annotations

import numpy as np
from test_rules import one_class, warm
from test_state import C, Run, cfg, feed, label_hist

from segwatch.core.advice import advice_text
from segwatch.core.wording import LABELS_ZH


def lossfn(r: Run, step=1, weight=None, ignore_index=255, fn="nn.CrossEntropyLoss", target_oor=(),
           calls=1, output=None, label_smoothing=0.0):
    w = None
    if weight is not None:
        v = np.asarray(weight, float)
        med = float(np.median(v))
        w = {"n": len(v), "min": float(v.min()), "max": float(v.max()), "median": med,
             "ratio": float(v.max() / med), "argmax": int(v.argmax()), "values": v.tolist()}
    call = {"fn": fn, "ignore_index": ignore_index, "reduction": "mean", "label_smoothing": label_smoothing,
            "weight": w, "input_shape": [2, r.C, 64, 64], "target_dtype": "int64", "target_oor": list(target_oor)}
    return r.ev("lossfn", step=step, calls=[call] * calls, calls_per_step=calls,
                output=output or {"kind": "tensor", "shape": [2, r.C, 64, 64]})


def _weights(c=5, big=100.0):
    w = np.ones(C)
    w[c] = big
    return w


def _exploding(r: Run):
    warm(r, 10)
    for s in range(11, 16):
        r.step(s, grad_norm=7000.0)


def test_exploding_gradients_with_a_huge_class_weight_name_the_weight_and_class_first():
    r = Run()
    r.model()
    lossfn(r, weight=_weights(5, 100.0))
    _exploding(r)
    st, _ = feed(r.events, cfg())
    f = st.findings["grad.exploding"]
    assert f.evidence["loss_cause"] == "class_weight"
    assert f.evidence["loss_weight_class"] == 5 and f.evidence["loss_weight_ratio"] == 100.0
    assert f.evidence["loss_fn"] == "nn.CrossEntropyLoss"
    en, zh = f.advice("en"), f.advice("zh")
    assert en.startswith("Likely cause: the loss (nn.CrossEntropyLoss) weights class 5 (class 5) 100.0x")
    assert "check the class weights first" in en
    assert zh.startswith("可能的原因") and "100.0" in zh
    d = f.to_dict("en")
    assert "class weights first" in d["advice"]


def test_class_names_from_the_config_name_the_weighted_class():
    names = [f"c{i}" for i in range(C)]
    names[5] = "lamp"
    r = Run()
    r.model()
    lossfn(r, weight=_weights(5, 40.0))
    _exploding(r)
    st, _ = feed(r.events, cfg(dataset__class_names=names))
    assert "class 5 (lamp) 40.0x" in st.findings["grad.exploding"].advice("en")


def test_sane_weights_or_no_loss_info_leave_the_advice_as_it_was():
    for weight in (np.linspace(0.5, 3.0, C), None):
        r = Run()
        r.model()
        lossfn(r, weight=weight)
        _exploding(r)
        st, _ = feed(r.events, cfg())
        f = st.findings["grad.exploding"]
        assert "loss_cause" not in f.evidence and f.evidence["loss_fn"] == "nn.CrossEntropyLoss"
        assert f.advice("en") == advice_text("grad.exploding", "en")
    r = Run()
    r.model()
    _exploding(r)
    st, _ = feed(r.events, cfg())
    assert "loss_fn" not in st.findings["grad.exploding"].evidence


def test_nonfinite_loss_with_a_huge_weight_names_it():
    r = Run()
    r.model()
    lossfn(r, weight=_weights(2, 500.0))
    warm(r, 5)
    r.step(6, loss=float("nan"))
    st, _ = feed(r.events, cfg())
    ev = st.findings["loss.nonfinite"].evidence
    assert ev["loss_cause"] == "class_weight" and ev["loss_weight_class"] == 2


def test_collapse_onto_the_most_weighted_class_says_the_weights_push_there():
    r = Run()
    r.model()
    lossfn(r, weight=_weights(4, 8.0))
    warm(r, 140, preds_fn=lambda s: one_class(4) if s > 105 else np.r_[np.ones(C, int) * 10], loss_fn=lambda s: 2.0)
    st, _ = feed(r.events, cfg(policy__grace_steps=100))
    f = st.findings["pred.collapse"]
    assert f.evidence["loss_cause"] == "dominant_class_weight" and f.evidence["loss_weight_class"] == 4
    assert "largest class weight" in f.advice("en")
    assert "权重" in f.advice("zh")


def test_collapse_without_weights_on_imbalanced_labels_advises_weights_or_focal():
    rng = np.random.RandomState(3)
    r = Run()
    r.model()
    lossfn(r, weight=None)
    for s in range(1, 141):
        r.batch(s, hist=label_hist(rng, dominant=0.92), ignore=300)
        r.preds(s, one_class(0) if s > 105 else np.r_[np.ones(C, int) * 10])
        r.step(s, loss=2.0)
    st, _ = feed(r.events, cfg(policy__grace_steps=100))
    f = st.findings["pred.collapse"]
    assert f.evidence["loss_cause"] == "no_class_weights" and f.evidence["label_top_class"] == 0
    assert f.evidence["label_top_share"] > 0.85
    assert "no class weights" in f.advice("en") and "focal" in f.advice("en")


def test_collapse_without_weights_on_balanced_labels_names_no_cause():
    r = Run()
    r.model()
    lossfn(r, weight=None)
    warm(r, 140, preds_fn=lambda s: one_class(4) if s > 105 else np.r_[np.ones(C, int) * 10], loss_fn=lambda s: 2.0)
    st, _ = feed(r.events, cfg(policy__grace_steps=100))
    assert "loss_cause" not in st.findings["pred.collapse"].evidence


def test_aux_heads_are_in_the_evidence_of_loss_and_pred_findings():
    r = Run()
    r.model()
    lossfn(r, calls=2, output={"kind": "dict", "keys": ["out", "aux"]})
    _exploding(r)
    ev = feed(r.events, cfg())[0].findings["grad.exploding"].evidence
    assert ev["loss_calls_per_step"] == 2 and ev["model_output"] == "dict[out,aux]"


def test_target_outside_the_classes_that_is_not_the_loss_ignore_index_is_the_bug():
    r = Run()
    r.model()
    lossfn(r, ignore_index=-100, target_oor=[255], step=0)
    st, new = feed(r.events, cfg(dataset__ignore_index="auto"))
    f = st.findings["loss.ignore_index_mismatch"]
    assert f.severity == "error"
    assert f.evidence["target_values"] == [255] and f.evidence["loss_ignore_index"] == -100
    assert f.evidence["suggest"] == "ignore_index=255"
    assert "ignore_index=-100 and receives [255]; use ignore_index=255" in f.advice("en")
    assert "本次" in f.advice("zh")


def test_raw_label_ids_out_of_range_are_not_an_ignore_index_mismatch():
    # Cityscapes labelIds not mapped to train ids (VainF DeepLabV3Plus with encode_target
    # skipped): several class ids >= C reach a loss that already ignores 255; advising
    # ignore_index=21 would hide real pixels (label.out_of_range names them)
    for ignore in (255, "auto"):
        r = Run()
        r.model()
        lossfn(r, ignore_index=255, target_oor=[21, 23, 24, 26], step=0)
        st, _ = feed(r.events, cfg(dataset__ignore_index=ignore))
        assert "loss.ignore_index_mismatch" not in st.findings, ignore
    # a lone value next to a loss that already ignores the configured 255: not an ignore either
    r = Run()
    r.model()
    lossfn(r, ignore_index=255, target_oor=[19], step=0)
    st, _ = feed(r.events, cfg(dataset__ignore_index=255))
    assert "loss.ignore_index_mismatch" not in st.findings
    # nor a label one past the head's classes (num_classes one short), whatever the loss ignores
    r = Run()
    r.model()
    lossfn(r, ignore_index=-100, target_oor=[r.C], step=0)
    st, _ = feed(r.events, cfg(dataset__ignore_index="auto"))
    assert "loss.ignore_index_mismatch" not in st.findings
    # ... but with the 255s also missed by the loss, the mismatch is named on 255
    r = Run()
    r.model()
    lossfn(r, ignore_index=-100, target_oor=[21, 23, 255], step=0)
    st, _ = feed(r.events, cfg(dataset__ignore_index=255))
    f = st.findings["loss.ignore_index_mismatch"]
    assert f.evidence["data_ignore"] == 255 and f.evidence["suggest"] == "ignore_index=255"
    # and a lone unusual value the loss does not ignore stays the suggestion
    r = Run()
    r.model()
    lossfn(r, ignore_index=-100, target_oor=[250], step=0)
    st, _ = feed(r.events, cfg(dataset__ignore_index="auto"))
    assert st.findings["loss.ignore_index_mismatch"].evidence["suggest"] == "ignore_index=250"


def test_loss_ignoring_the_labels_ignore_value_raises_nothing():
    r = Run()
    r.model()
    lossfn(r, ignore_index=255, target_oor=[])
    warm(r, 30)
    st, _ = feed(r.events, cfg(dataset__ignore_index=255))
    assert "loss.ignore_index_mismatch" not in st.findings


def test_label_findings_carry_the_loss_ignore_index_and_name_a_mismatch():
    rng = np.random.RandomState(0)
    r2 = Run()
    r2.model()
    lossfn(r2, ignore_index=-100)
    for s in range(1, 4):
        r2.batch(s, hist=label_hist(rng), ignore=0, ignore_value=None, oor={255: 300})
        r2.step(s)
    st, _ = feed(r2.events, cfg(dataset__ignore_index=-1))
    f = st.findings["label.ignore_mismatch"]
    assert f.evidence["loss_ignore_index"] == -100
    assert f.evidence["loss_cause"] == "loss_ignore" and f.evidence["data_ignore"] == 255
    assert f.advice("en").startswith("The loss (nn.CrossEntropyLoss) ignores -100, the labels' ignore value is 255")


def test_new_evidence_keys_have_chinese_labels():
    for k in ("loss_fn", "loss_cause", "loss_weight_class", "loss_weight_class_name", "loss_weight_ratio",
              "loss_ignore_index", "data_ignore", "target_values", "loss_calls_per_step", "model_output",
              "label_top_class", "label_top_share", "loss_label_smoothing"):
        assert k in LABELS_ZH


def test_lossfn_events_replay_into_the_state():
    r = Run()
    lossfn(r, weight=_weights(1, 3.0), step=0)
    lossfn(r, weight=None, step=50)
    st, _ = feed(r.events, cfg())
    assert len(st.lossfns) == 2 and st.lossfn["calls"][0]["weight"] is None


def test_low_diversity_with_a_huge_weight_on_another_class_names_the_weight():
    r = Run()
    r.model()
    lossfn(r, weight=_weights(7, 100.0))
    rng = np.random.RandomState(1)
    three = np.zeros(C, int)
    three[[0, 1, 2]] = [300, 150, 62]
    for s in range(1, 121):
        lh = label_hist(rng)
        r.batch(s, hist=lh, ignore=300)
        r.preds(s, three if s > 30 else rng.multinomial(500, np.ones(C) / C), gt_hist=lh // 8)
        r.step(s, loss=1.5)
    st, _ = feed(r.events, cfg(policy__grace_steps=20))
    f = st.findings["pred.low_diversity"]
    assert f.evidence["loss_cause"] == "class_weight" and f.evidence["loss_weight_class"] == 7
    assert "check the class weights first" in f.advice("en")


# ------------------------------------------------------------------ label.last_class_missing
def _shifted_run(last_present: bool, n=30, val=True):
    rng = np.random.RandomState(5)
    r = Run()
    r.model()
    for s in range(1, n + 1):
        h = label_hist(rng)
        if not last_present:
            h[C - 1] = 0
        r.batch(s, hist=h, ignore=800, ignore_value=255)
        r.step(s)
    if val:
        h = label_hist(rng)
        if not last_present:
            h[C - 1] = 0
        r.batch(n, phase="val", hist=h, ignore=800, ignore_value=255)
    return r


def test_reduce_zero_label_on_zero_based_labels_is_found():
    st, _ = feed(_shifted_run(False).events, cfg(dataset__ignore_index=255, dataset__reduce_zero_label=True))
    f = st.findings["label.last_class_missing"]
    assert f.evidence["class"] == C - 1 and f.evidence["source"] == "config" and f.evidence["batches"] >= 20
    assert "reduce_zero_label=False" in f.advice("en") and "reduce_zero_label=False" in f.advice("zh")


def test_last_class_missing_needs_reduce_zero_label_and_enough_batches():
    # no reduce_zero_label: a rare last class may just be absent
    st, _ = feed(_shifted_run(False).events, cfg(dataset__ignore_index=255))
    assert "label.last_class_missing" not in st.findings
    # the last class present: the shift is right
    st, _ = feed(_shifted_run(True).events, cfg(dataset__ignore_index=255, dataset__reduce_zero_label=True))
    assert "label.last_class_missing" not in st.findings
    # too few batches to judge
    st, _ = feed(_shifted_run(False, n=12).events, cfg(dataset__ignore_index=255, dataset__reduce_zero_label=True))
    assert "label.last_class_missing" not in st.findings


def test_mmseg_reduce_zero_label_note_arms_the_rule():
    r = _shifted_run(False)
    r.events.insert(0, r.ev("probe", name="dataset_facts", status="note", source="mmseg", reduce_zero_label=True,
                            message="mmseg dataset: reduce_zero_label=True"))
    r.events.pop()      # ev() appended it at the end too
    st, _ = feed(r.events, cfg(dataset__ignore_index=255))
    assert st.framework_reduce_zero_label is True
    assert st.findings["label.last_class_missing"].evidence["source"] == "framework"
