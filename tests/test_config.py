"""Tests for segwatch.config: loading, validation messages, round trips, output."""
from pathlib import Path

import pytest
import yaml

from segwatch.config import (
    ADAPTERS,
    Config,
    ConfigError,
    default_config,
    format_config,
    load_config,
    schema_reference,
)

EXAMPLES = sorted((Path(__file__).resolve().parent.parent / "example_configs").glob("*.yaml"))

EXPECTED = {
    "sunrgbd.yaml": (37, -1),
    "nyudv2.yaml": (40, 255),
    "cityscapes.yaml": (19, 255),
    "ade20k.yaml": (150, 255),
    "voc.yaml": (21, 255),
}


def write(tmp_path, text, name="example.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def error_of(tmp_path, text, name="example.yaml") -> str:
    p = write(tmp_path, text, name)
    with pytest.raises(ConfigError) as ei:
        load_config(p)
    msg = str(ei.value)
    assert "\n" not in msg
    assert name in msg
    return msg


def test_every_example_loads():
    assert {p.name for p in EXAMPLES} >= set(EXPECTED)
    for p in EXAMPLES:
        cfg = load_config(p)
        assert cfg.source == str(p)
        if p.name in EXPECTED:
            assert (cfg.dataset.num_classes, cfg.dataset.ignore_index) == EXPECTED[p.name]
        if cfg.dataset.class_names is not None:
            assert len(cfg.dataset.class_names) == cfg.dataset.num_classes


def test_sunrgbd_example_contents():
    cfg = load_config(next(p for p in EXAMPLES if p.name == "sunrgbd.yaml"))
    names = cfg.dataset.class_names
    assert names[0] == "wall" and names[-1] == "bag" and names[19] == "floor_mat"
    assert cfg.train.expected_lr == pytest.approx(8e-5)
    assert cfg.thresholds.grad_norm_min == pytest.approx(1e-7)
    assert cfg.thresholds.grad_norm_max == 1000
    assert cfg.adapter == "auto"


def test_misspelt_key_names_key_file_and_suggestion(tmp_path):
    msg = error_of(tmp_path, "dataset:\n  name: x\n  num_clases: 37\n")
    path = tmp_path / "example.yaml"
    assert msg == f"{path}:3: dataset.num_clases: unknown key (did you mean 'num_classes'?)"
    msg = error_of(tmp_path, "datset:\n  num_classes: 3\nadapter: auto\n")
    assert "datset: unknown key (did you mean 'dataset'?)" in msg


def test_wrong_types(tmp_path):
    msg = error_of(tmp_path, "thresholds:\n  grad_norm_max: abc\n")
    assert "thresholds.grad_norm_max: expected a number, got 'abc'" in msg
    msg = error_of(tmp_path, "thresholds:\n  grad_norm_max: true\n")
    assert "thresholds.grad_norm_max: expected a number, got True" in msg  # bools are not numbers
    msg = error_of(tmp_path, "dataset:\n  num_classes: 3.5\n")
    assert "dataset.num_classes: expected an integer" in msg
    msg = error_of(tmp_path, "dataset:\n  num_classes: '19'\n")
    assert "dataset.num_classes: expected an integer, got '19'" in msg
    msg = error_of(tmp_path, "dataset:\n  ignore_index: foo\n")
    assert "dataset.ignore_index: expected an integer, 'auto' or null" in msg
    msg = error_of(tmp_path, "dataset:\n  class_names: wall\n")
    assert "dataset.class_names: expected a list" in msg
    msg = error_of(tmp_path, "dataset:\n  num_classes: 3\n  class_names: [a, b, on]\n")
    assert "dataset.class_names[2]" in msg and ":3:" in msg
    msg = error_of(tmp_path, "policy: warn\n")
    assert "policy: expected a mapping" in msg
    msg = error_of(tmp_path, "dataset:\n  reduce_zero_label: 1\n")
    assert "dataset.reduce_zero_label: expected true or false" in msg


@pytest.mark.parametrize(
    "text, key",
    [
        ("dataset: {num_classes: 1}", "dataset.num_classes"),
        ("dataset: {num_classes: 0}", "dataset.num_classes"),
        ("dataset: {num_classes: 19, ignore_index: 0}", "dataset.ignore_index"),
        ("dataset: {num_classes: 19, ignore_index: 18}", "dataset.ignore_index"),
        ("dataset: {num_classes: 3, class_names: [a, b]}", "dataset.class_names"),
        ("dataset: {class_names: [a, b, a]}", "dataset.class_names[2]"),
        ("train: {expected_lr: 0}", "train.expected_lr"),
        ("train: {expected_lr: -1.0e-4}", "train.expected_lr"),
        ("train: {max_steps: 0}", "train.max_steps"),
        ("thresholds: {grad_norm_min: -1.0}", "thresholds.grad_norm_min"),
        ("thresholds: {grad_norm_max: 0}", "thresholds.grad_norm_max"),
        ("thresholds: {grad_norm_min: 10, grad_norm_max: 10}", "thresholds.grad_norm_min"),
        ("thresholds: {grad_norm_min: 1.0e+4}", "thresholds.grad_norm_min"),
        ("thresholds: {min_pred_classes: 0}", "thresholds.min_pred_classes"),
        ("dataset: {num_classes: 3}\nthresholds: {min_pred_classes: 4}",
         "thresholds.min_pred_classes"),
        ("thresholds: {miou_stuck_evals: 1}", "thresholds.miou_stuck_evals"),
        ("policy: {grace_steps: -5}", "policy.grace_steps"),
        ("policy: {on_collapse: stop}", "policy.on_collapse"),
        ("policy: {on_nonfinite: ignore}", "policy.on_nonfinite"),
        ("sampling: {overhead_budget: 0}", "sampling.overhead_budget"),
        ("sampling: {overhead_budget: 1}", "sampling.overhead_budget"),
        ("sampling: {overhead_budget: 1.5}", "sampling.overhead_budget"),
        ("sampling: {overhead_budget: -0.1}", "sampling.overhead_budget"),
        ("thresholds: {grad_norm_max: .inf}", "thresholds.grad_norm_max"),
        ("adapter: keras", "adapter"),
    ],
)
def test_impossible_values(tmp_path, text, key):
    msg = error_of(tmp_path, text + "\n")
    assert f": {key}: " in msg


def test_policy_suggestion(tmp_path):
    msg = error_of(tmp_path, "policy: {on_collapse: kil}\n")
    assert "expected one of warn, pause, kill, got 'kil' (did you mean 'kill'?)" in msg


def test_segwatch_section_in_larger_training_yaml(tmp_path):
    text = (
        "model:\n  backbone: DFormer-Base\n  pretrained: true\n"
        "optimizer: {type: AdamW, lr: 8.0e-5}\n"
        "dataset: {root: /data/sunrgbd}\n"  # the training script's own dataset key
        "segwatch:\n"
        "  dataset: {num_classes: 37, ignore_index: auto}\n"
        "  policy: {on_collapse: pause}\n"
    )
    cfg = load_config(write(tmp_path, text, "train.yaml"))
    assert cfg.dataset.num_classes == 37
    assert cfg.dataset.ignore_index == "auto"
    assert cfg.policy.on_collapse == "pause"
    assert cfg.thresholds.grad_norm_max == 1000.0
    # errors inside the section name the full dotted path and its line
    msg = error_of(tmp_path, text + "  sampling: {overhed_budget: 0.1}\n", "train.yaml")
    assert ":9: segwatch.sampling.overhed_budget: unknown key" in msg
    assert "did you mean 'overhead_budget'" in msg
    # an empty section gives the defaults
    cfg = load_config(write(tmp_path, "model: {a: 1}\nsegwatch:\n", "t2.yaml"))
    assert cfg == Config(source=str(tmp_path / "t2.yaml"))


def test_yaml_without_segwatch_settings_is_an_error(tmp_path):
    msg = error_of(tmp_path, "model: {a: 1}\noptimizer: {lr: 0.1}\n", "train.yaml")
    assert "no segwatch settings" in msg and "segwatch:" in msg
    msg = error_of(tmp_path, "", "empty.yaml")
    assert "no segwatch settings" in msg
    msg = error_of(tmp_path, "- a\n- b\n", "list.yaml")
    assert "mapping" in msg
    # a training YAML that happens to share a key gets a pointer to the section
    msg = error_of(tmp_path, "dataset: {num_classes: 3}\nmodel: {a: 1}\n", "mixed.yaml")
    assert "mixed.yaml:2: model: unknown key" in msg and "`segwatch:` section" in msg


def test_unreadable_and_syntax_error(tmp_path):
    with pytest.raises(ConfigError) as ei:
        load_config(tmp_path / "missing.yaml")
    assert "missing.yaml" in str(ei.value) and "cannot read" in str(ei.value)
    msg = error_of(tmp_path, "dataset:\n  num_classes: 3\n  class_names: [a, b\n", "bad.yaml")
    assert "YAML syntax error" in msg and "bad.yaml:" in msg
    line = int(msg.split("bad.yaml:")[1].split(":")[0])
    assert line >= 3
    msg = error_of(tmp_path, "dataset:\n  num_classes: 3\n  num_classes: 4\n", "dup.yaml")
    assert "dup.yaml:3: dataset.num_classes: duplicate key" in msg


def test_auto_and_null_ignore_and_numeric_strings(tmp_path):
    cfg = load_config(write(tmp_path, "dataset: {num_classes: 37, ignore_index: auto}\n"))
    assert cfg.dataset.ignore_index == "auto"
    cfg = load_config(write(tmp_path, "dataset: {num_classes: 37, ignore_index: null}\n"))
    assert cfg.dataset.ignore_index is None
    cfg = load_config(write(tmp_path, "dataset: {num_classes: 37, ignore_index: 255}\n"))
    assert cfg.dataset.ignore_index == 255
    # PyYAML reads 1e-7 (no dot) as a string; it is still a number to us
    cfg = load_config(write(tmp_path, "thresholds: {grad_norm_min: 1e-7}\ntrain: {expected_lr: 8e-5}\n"))
    assert cfg.thresholds.grad_norm_min == pytest.approx(1e-7)
    assert cfg.train.expected_lr == pytest.approx(8e-5)


def test_defaults_and_derived_values():
    d = default_config()
    assert d.dataset.num_classes is None and d.dataset.ignore_index == "auto"
    assert (d.thresholds.grad_norm_min, d.thresholds.grad_norm_max) == (1e-7, 1000.0)
    assert (d.thresholds.min_pred_classes, d.thresholds.miou_stuck_evals) == (5, 3)
    assert (d.policy.on_collapse, d.policy.on_nonfinite, d.policy.grace_steps) == ("warn", "warn", 100)
    assert d.sampling.overhead_budget == 0.01 and d.adapter == "auto"
    c = Config.from_dict({"dataset": {"class_names": ["bg", "fg"]}})
    assert c.dataset.num_classes == 2
    assert c.thresholds.min_pred_classes == 2  # unset default lowered to C
    c = Config.from_dict({"policy": {"on_collapse": "KILL"}, "adapter": "HF"})
    assert c.policy.on_collapse == "kill" and c.adapter == "hf"


def test_from_dict_errors_name_dict_source():
    with pytest.raises(ConfigError) as ei:
        Config.from_dict({"dataset": {"num_classes": "x"}})
    assert str(ei.value).startswith("<dict>: dataset.num_classes: expected an integer")
    assert ei.value.key == "dataset.num_classes" and ei.value.line is None


def test_round_trip():
    for p in EXAMPLES:
        cfg = load_config(p)
        d = cfg.to_dict()
        assert set(d) == {"dataset", "train", "thresholds", "policy", "sampling", "adapter"}
        assert Config.from_dict(d, source=cfg.source) == cfg
        # to_dict is JSON/YAML friendly, and the YAML dump loads back to the same config
        assert Config.from_dict(yaml.safe_load(yaml.safe_dump(d)), cfg.source) == cfg
    cfg = default_config()
    assert Config.from_dict(cfg.to_dict(), source=None) == cfg


def test_format_config_is_readable_and_loadable(tmp_path):
    cfg = load_config(next(p for p in EXAMPLES if p.name == "sunrgbd.yaml"))
    text = format_config(cfg)
    assert text.startswith("# segwatch config resolved from")
    assert "num_classes: 37" in text and "ignore_index: -1" in text
    assert "class_names: [wall, floor," in text
    again = load_config(write(tmp_path, text, "resolved.yaml"))
    assert again.to_dict() == cfg.to_dict()
    assert "inferred from the labels" in format_config(default_config())


def test_schema_reference_lists_every_key():
    ref = schema_reference()
    lines = ref.strip().splitlines()
    assert lines[0].startswith("| key | type | default | meaning |")
    d = default_config().to_dict()
    keys = [f"{s}.{k}" for s, v in d.items() if isinstance(v, dict) for k in v] + ["adapter"]
    for k in keys:
        assert f"| `{k}` |" in ref, k
    assert len(lines) == 2 + len(keys)
    assert "`1e-07`" in ref and "`auto`" in ref
    for a in ADAPTERS:
        assert f"`{a}`" in ref
