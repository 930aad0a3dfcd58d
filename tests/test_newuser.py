"""What a new user trips on (issue 16): the demo's exit status, headless finding lines,
the fixed printed-mIoU scale, class names, progress counters, `segwatch init`."""
from __future__ import annotations

from segwatch.cli import demo_outcome


# ---------------------------------------------------------------------- demo exit status
def test_demo_exits_0_when_the_policy_stopped_the_faulty_run():
    report = {"status": "killed", "exit_code": 143,
              "actions": [{"kind": "kill", "finding": "pred.collapse", "step": 223, "by": "policy"}]}
    code, line = demo_outcome(report, 143)
    assert code == 0
    assert "pred.collapse" in line and "223" in line and "143" in line
    code, line = demo_outcome(report, 143, "zh")
    assert code == 0 and "143" in line and "演示" in line


def test_demo_keeps_the_training_status_when_nothing_was_acted_on():
    # a user's Ctrl-C (a kill by the user) or a crash: the demo did not show its point
    user_kill = {"actions": [{"kind": "kill", "finding": None, "step": 40, "by": "user"}]}
    assert demo_outcome(user_kill, 130)[0] == 130
    assert demo_outcome({}, 1)[0] == 1
    code, line = demo_outcome({"actions": []}, 0)
    assert code == 0 and "0" in line


# ---------------------------------------------------------------------- headless finding lines
from segwatch.core.findings import Finding  # noqa: E402
from segwatch.supervisor.headless import WIDTH, finding_line  # noqa: E402


def _collapse() -> Finding:
    return Finding(id="pred.collapse", severity="error", first_step=200,
                   evidence={"source": "training predictions", "class": 1, "class_name": "floor",
                             "share": 1.0, "min_share": 1.0, "threshold": 0.98})


def test_finding_prints_a_head_line_then_indented_evidence_and_advice():
    lines = finding_line(_collapse()).splitlines()
    assert lines[0] == "[segwatch] ERROR pred.collapse @ step 200 — Predictions collapsed to one class"
    rest = lines[1:]
    assert len(rest) >= 2 and all(line.startswith("    ") for line in rest), rest
    assert rest[0].lstrip().startswith("evidence:") and "class_name=floor" in rest[0]
    advice = [i for i, line in enumerate(rest) if line.lstrip().startswith("advice:")]
    assert advice and "Lower the learning rate" in " ".join(rest[advice[0]:])
    assert "covers 100.0%" in " ".join(rest[advice[0]:])      # this run's values, at the end
    assert all(len(line) <= WIDTH for line in rest), [len(x) for x in rest]


def test_finding_lines_in_chinese():
    lines = finding_line(_collapse(), "zh").splitlines()
    assert lines[0] == "[segwatch] 错误 pred.collapse @ 第 200 步 — 预测塌缩为单一类别"
    assert lines[1].startswith("    证据：")
    assert any(line.startswith("    建议：") for line in lines[2:])
    assert all(line.startswith("    ") for line in lines[1:])


def test_finding_from_a_report_dict_in_validation():
    text = finding_line({"id": "metric.cm_empty", "severity": "warning", "first_step": 3, "phase": "val",
                         "title": "Empty matrix", "evidence": {"total": 0}, "advice": "Check it."})
    assert text.splitlines() == ["[segwatch] WARNING metric.cm_empty @ step 3 (val) — Empty matrix",
                                 "    evidence: total=0", "    advice: Check it."]


# ---------------------------------------------------------------------- evidence: inferred ignore
def test_cm_empty_does_not_count_the_inferred_ignore_value_as_out_of_range():
    import numpy as np
    from test_state import C, Run, cfg, feed, label_hist

    r = Run()
    r.model()
    rng = np.random.RandomState(0)
    for s in range(1, 11):   # ignore_index: auto; the labels carry 255 borders (the shim: oor)
        r.batch(s, hist=label_hist(rng), ignore_value=None, oor={255: 300})
        r.step(s)
    r.batch(10, phase="val", hist=np.zeros(C, int), ignore_value=None, oor={255: 65536})
    ev = r.eval(10, np.zeros((C, C), int), oor=65536)
    ev["oor_values"] = {"255": 65536}
    st, _ = feed(r.events, cfg(dataset__ignore_index="auto"))
    assert st.inferred_ignore == 255
    f = st.findings["metric.cm_empty"]
    assert f.evidence["oor"] == 0, f.evidence                    # 255 is ignored, not out of range
    assert f.evidence["ignore_index"] == 255 and f.evidence["ignore_inferred"] is True
    assert f.evidence["ignored_pixels"] == 65536
    assert "outside 0..C-1" not in f.evidence["why"] and "inferred ignore value 255" in f.evidence["why"]
    # a real out-of-range value next to it is still counted as one
    r.events[-1]["oor"], r.events[-1]["oor_values"] = 65636, {"255": 65536, "40": 100}
    f = feed(r.events, cfg(dataset__ignore_index="auto"))[0].findings["metric.cm_empty"]
    assert f.evidence["oor"] == 100 and "100 label pixels outside 0..C-1" in f.evidence["why"]


# ---------------------------------------------------------------------- class names
def _names_state(config_names=None):
    from segwatch.config import Config
    from segwatch.core.state import RunState

    d = {"dataset": {"num_classes": 3, "ignore_index": 255}}
    if config_names:
        d["dataset"]["class_names"] = config_names
    return RunState(config=Config.from_dict(d))


def _probe(names, source):
    from segwatch.protocol import make_event

    return make_event("probe", name="class_names", status="note", class_names=names, source=source, step=0)


def test_class_names_config_first_then_framework_then_class_n():
    st = _names_state()
    assert st.class_name(2) == "class 2" and st.class_name(None) is None     # never None or "?"
    st.ingest(_probe(["wall", "floor", "bed"], "hf"))
    assert st.class_name(2) == "bed" and st.class_names_source == "hf"
    assert st.class_name(7) == "class 7"
    st = _names_state(["sky", "road", "car"])
    st.ingest(_probe(["wall", "floor", "bed"], "mmseg"))
    assert st.class_name(0) == "sky" and st.class_names_source == "config"


def test_adapters_report_framework_class_names(monkeypatch):
    import types

    from segwatch.adapters import _base as B
    from segwatch.adapters import dformer

    sent = []
    fake = types.SimpleNamespace(step=5, _emit=lambda type_, **f: sent.append((type_, f)))
    monkeypatch.setattr(B, "shim", lambda: fake)
    monkeypatch.setattr(B, "_names_sent", set())
    assert not B.report_class_names({0: "LABEL_0", 1: "LABEL_1"}, "hf")    # HF's default names nothing
    assert B.report_class_names({"1": "floor", "0": "wall"}, "hf")         # id2label, keys as strings
    assert sent[-1][0] == "probe" and sent[-1][1]["class_names"] == ["wall", "floor"]
    assert not B.report_class_names({0: "wall"}, "hf")                     # once per source
    # a DFormer-style config module of the script: C.class_names
    mod = types.ModuleType("local_configs_fake")
    mod.__file__ = "/work/proj/local_configs/fake.py"
    mod.C = types.SimpleNamespace(class_names=["a", "b", "c"])
    monkeypatch.setitem(__import__("sys").modules, "local_configs_fake", mod)
    assert dformer._config_class_names(3) == ["a", "b", "c"]
    assert dformer._config_class_names(4) is None
    # the event reaches core as the framework's names
    st = _names_state()
    from segwatch.protocol import make_event
    st.ingest(make_event(sent[-1][0], **sent[-1][1]))
    assert st.class_name(1) == "floor"


def test_no_none_or_question_mark_class_names_in_collapse_texts():
    """A collapse in a run whose config names no classes: evidence, advice, checklist say
    ``class 4`` (they said class_name=None and "class 4 (?)")."""
    import numpy as np
    from test_rules import one_class, warm
    from test_state import C, Run, cfg, feed

    from segwatch.supervisor.headless import finding_line

    r = Run()
    warm(r, 140, preds_fn=lambda s: one_class(4) if s > 105 else np.r_[np.ones(C, int) * 10],
         loss_fn=lambda s: 2.0)
    for lang in ("en", "zh"):
        st, _ = feed(r.events, cfg(policy__grace_steps=100), lang=lang)
        f = st.findings["pred.collapse"]
        assert f.evidence["class_name"] == "class 4"
        texts = [finding_line(f, lang), f.advice(lang)]
        texts += [str(getattr(it, "evidence", "")) for it in st.checklist]
        for text in texts:
            assert "None" not in text and "(?)" not in text and "（?）" not in text, text
        assert any("class 4" in t for t in texts[2:]), texts[2:]


# ---------------------------------------------------------------------- progress counters
def _batch(r, step, index, length=50, epoch=0, loader=0):
    ev = r.batch(step, hist=[10] * 37, index=index, epoch=epoch)
    ev["length"], ev["loader"] = length, loader
    return ev


def test_batch_counter_advances_between_sampled_batches():
    from test_state import Run, cfg, feed

    r = Run()
    _batch(r, 170, 12)              # sampled at step 170: batch 13/50
    for s in range(171, 224):
        r.step(s)
    st, _ = feed(r.events, cfg())
    assert st.loop.batch(182) == (25, 50)      # not 13/50 twelve steps later
    assert st.loop.batch(223) == (16, 50)      # 12 + 53 = 65 -> wrapped into the next pass
    # gradient accumulation: two batches per step, measured between two samples of a pass
    r = Run()
    _batch(r, 10, 4)
    _batch(r, 20, 24)
    st, _ = feed(r.events, cfg())
    assert st.loop.per_step == 2.0 and st.loop.batch(22) == (29, 50)


def test_next_driven_loader_passes_are_counted():
    """DFormer style: `dataloader = iter(train_loader)` per epoch, then `next()` niters times:
    the iterator is never exhausted, the shim's `epoch` stays 0; a sampled index going back
    is a new pass."""
    from test_state import Run, cfg, feed

    r = Run()
    step = 0
    for ep in range(4):
        for idx in (3, 20, 37):
            step = ep * 40 + idx + 1
            _batch(r, step, idx, length=40, epoch=0)
    st, _ = feed(r.events, cfg())
    assert st.epoch == 0 and st.loop.passes == 3        # 4 passes begun, 3 completed
    rep = st.report(0)
    assert rep["epochs"]["loader_passes"] == 3 and rep["epochs"]["script"] is None


def test_the_report_counts_epochs_as_the_script_prints_them_or_says_it_cannot_know():
    from test_state import Run, cfg, feed

    from segwatch.core.progress import printed_epoch
    from segwatch.reporting.markdown import epoch_text

    assert printed_epoch("epoch 2: mIoU: 0.13  (mean loss 38.0186, 56s)") == (2, None)
    assert printed_epoch("Epoch [3/10] iter 40 loss 0.5") == (3, 10)
    assert printed_epoch("Epoch 5/100: 100%|####| 48/48") == (5, 100)
    assert printed_epoch("num_epochs = 20") is None and printed_epoch("epochs: 3") is None
    r = Run()
    for s in range(1, 5):
        _batch(r, s * 25, (s * 25) % 50, epoch=s // 2)     # two loader passes per script epoch
    r.ev("output", stream="stdout", line="epoch 1: mIoU: 21.29  (mean loss 0.5, 20s)")
    st, _ = feed(r.events, cfg())
    assert epoch_text(st, None, "en") == "1" and st.report(0)["epochs"]["script"] == 1
    r.ev("output", stream="stdout", line="Epoch [2/6] done")
    st, _ = feed(r.events, cfg())
    assert epoch_text(st, None, "en") == "2 of 6"
    st, _ = feed([e for e in r.events if e["type"] != "output"], cfg())
    text = epoch_text(st, None, "en")
    assert text.startswith("unknown") and "2 passes" in text, text
    assert "无法得知" in epoch_text(st, None, "zh")


# ---------------------------------------------------------------------- segwatch init
def test_init_writes_a_config_that_check_accepts_and_the_checklist_reads_ok(tmp_path):
    import numpy as np
    from test_state import Run, feed

    from segwatch.cli import main
    from segwatch.config import load_config
    from segwatch.presets import PRESETS

    for name in PRESETS:
        out = tmp_path / f"{name}.yaml"
        assert main(["init", "--preset", name, "--out", str(out)]) == 0
        assert main(["check", "--config", str(out)]) == 0
        text = out.read_text()
        assert text.count("\n#") + text.count("\n  #") >= 4          # commented
        cfg = load_config(out)
        assert cfg.dataset.ignore_index == 255 and cfg.train.pretrained == "none"
        assert len(cfg.dataset.class_names) == cfg.dataset.num_classes
    assert main(["init", "--preset", "voc", "--out", str(tmp_path / "voc.yaml")]) == 2   # no overwrite
    sun = load_config(tmp_path / "sunrgbd.yaml")
    assert sun.dataset.num_classes == 37 and sun.dataset.class_names[0] == "wall"
    assert sun.dataset.reduce_zero_label is True          # SUNRGBD in the guide's codebase: 255 after gt - 1

    def checklist(config):
        r = Run()
        r.model(out_channels=37)
        rng = np.random.RandomState(0)
        for s in range(1, 151):
            r.batch(s, hist=rng.multinomial(4000, np.ones(37) / 37), ignore=300, ignore_value=255)
            r.step(s)
        r.ev("status", status="finished", exit_code=0)
        st, _ = feed(r.events, config)
        return {it.id: it.state for it in st.checklist}

    items = checklist(sun)
    for key in ("num_classes", "ignore_label", "pretrained_loaded"):
        assert items[key] == "ok", items
    bare = checklist(None)                                # unconfigured: the same run warns
    assert bare["num_classes"] == "warn" and bare["pretrained_loaded"] == "warn", bare


def test_pretrained_config_values():
    import pytest

    from segwatch.config import Config, ConfigError

    assert Config.from_dict({"train": {"pretrained": "None"}}).train.pretrained == "none"
    assert Config.from_dict({"train": {"pretrained": False}}).train.pretrained == "none"
    assert Config.from_dict({"train": {"pretrained": "ckpt/b.pth"}}).train.pretrained == "ckpt/b.pth"
    assert Config.from_dict({"train": {}}).train.pretrained is None
    with pytest.raises(ConfigError, match="pretrained"):
        Config.from_dict({"train": {"pretrained": 3}})


# ---------------------------------------------------------------------- zh complete
#: words that stay as they are in Chinese text: code, formats, units, product names
ZH_ALLOWED = {
    "miou", "iou", "logits", "warmup", "ohem", "auto", "softmax", "amp", "gradscaler", "sigstop",
    "segwatch", "torch", "pytorch", "dformer", "mmseg", "hf", "lr", "nan", "inf", "gpu", "cpu", "png",
    "uint8", "rgb", "val", "train", "eval", "batch", "epoch", "step", "backward", "optimizer", "loss",
    "none", "null", "true", "false", "ctl", "resume", "kill", "pause", "fg", "id", "ids",
    "dataloader", "scheduler", "momentum", "dropout", "eps", "bn", "batchnorm", "ema", "ddp",
    "ignore",   # "ignore 值": the ignore_index, a term the Chinese texts keep
    "label", "image", "rgb", "depth",   # the keys of the user's batch dict, quoted as they are
}


def _english_words(text: str, allowed: set[str]) -> list[str]:
    import re

    text = re.sub(r"`[^`]*`", " ", text)                      # code spans
    text = re.sub(r"\bclass \d+", " ", text)                 # an unnamed class's name: `class 7`
    text = re.sub(r"\b[\w.]*[_.()\[\]][\w.()\[\]]*", " ", text)  # ids and code words: pred.collapse, ignore_index
    words = re.findall(r"[A-Za-z]{2,}", text)
    return [w for w in words if w.lower() not in allowed and w.lower() not in ZH_ALLOWED]


def _zh_reports() -> list:
    """Reports of runs with many findings: the recorded SUNRGBD collapse, and synthetic runs
    (a collapse without class names, an empty matrix under ignore auto, a wild LR, a loss
    that blows up), each built in Chinese."""
    import json
    from pathlib import Path

    import numpy as np
    from test_rules import one_class, warm
    from test_state import C, Run, cfg, feed, label_hist

    streams = []
    rec = Path(__file__).parent / "data" / "recorded_run" / "events.jsonl"
    streams.append(([json.loads(line) for line in rec.read_text().splitlines() if line.strip()], None))
    r = Run()
    warm(r, 140, preds_fn=lambda s: one_class(4) if s > 105 else np.r_[np.ones(C, int) * 10],
         loss_fn=lambda s: 2.0)
    streams.append((r.events, cfg(policy__grace_steps=100)))
    r = Run()
    r.model()
    rng = np.random.RandomState(0)
    for s in range(1, 11):
        r.batch(s, hist=label_hist(rng), ignore_value=None, oor={255: 300})
        r.step(s)
    r.batch(10, phase="val", hist=np.zeros(C, int), ignore_value=None, oor={255: 65536})
    ev = r.eval(10, np.zeros((C, C), int), oor=65636)
    ev["oor_values"] = {"255": 65536, "40": 100}
    streams.append((r.events, cfg(dataset__ignore_index="auto")))
    r = Run()
    warm(r, 150, loss_fn=lambda s: 0.5 if s < 100 else 0.5 * 1.08 ** (s - 100))
    for s in range(151, 160):
        r.step(s, lr=(1.0,))
    r.ev("status", status="finished", exit_code=0)
    streams.append((r.events, cfg()))
    reports = []
    for events, config in streams:
        st, _ = feed(events, config, lang="zh")
        reports.append((st.report(0), set((st.class_names or []))))
    return reports


def test_every_finding_and_checklist_item_of_the_reports_renders_in_chinese():
    from segwatch.supervisor.headless import finding_line

    problems = []
    n_findings = 0
    for rep, names in _zh_reports():
        allowed = {n.lower() for n in names}
        for f in rep["findings"]:
            n_findings += 1
            text = finding_line(f, "zh")
            left = _english_words(text.replace(f["id"], " "), allowed)
            if left:
                problems.append(f"finding {f['id']}: {sorted(set(left))}\n{text}")
        for it in rep["checklist"]:
            text = f"{it.get('title')} | {it.get('evidence')}"
            left = _english_words(text, allowed)
            if left:
                problems.append(f"checklist {it['id']}: {sorted(set(left))}: {text}")
        # `segwatch report RUN --lang zh` (the text report), paths and ids aside
        import re

        from segwatch.supervisor.headless import report_text_zh
        text = re.sub(r"\S*/\S*", " ", report_text_zh(rep))
        for f in rep["findings"]:
            text = text.replace(f["id"], " ")
        left = _english_words(text, allowed)
        if left:
            problems.append(f"text report: {sorted(set(left))}")
    ids = {f["id"] for rep, _ in _zh_reports() for f in rep["findings"]}
    assert n_findings >= 6 and {"optim.lr_suspicious", "metric.cm_empty", "pred.collapse"} <= ids, ids
    assert not problems, "untranslated English in --lang zh:\n" + "\n".join(problems)


def test_report_command_prints_the_text_report_in_chinese(capsys):
    from pathlib import Path

    from segwatch.cli import main

    run = Path(__file__).parent / "data" / "recorded_run"
    assert main(["report", str(run), "--lang", "zh"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("segwatch 报告") and "诊断（" in out and "检查清单：" in out
    assert "错误 pred.collapse @ 第 " in out and "Findings" not in out and "Checklist" not in out
