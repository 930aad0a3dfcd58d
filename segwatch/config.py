"""segwatch configuration: schema, loading, validation and pretty-printing.

A config is YAML read with ``yaml.safe_load``: either a bare segwatch config

    dataset:    {name: SUNRGBD, num_classes: 37, ignore_index: -1, class_names: [...]}
    train:      {expected_lr: 8.0e-5}
    thresholds: {grad_norm_min: 1.0e-7, grad_norm_max: 1000, min_pred_classes: 5, miou_stuck_evals: 3}
    policy:     {on_collapse: warn, on_nonfinite: warn, grace_steps: 100}
    sampling:   {overhead_budget: 0.01}
    adapter:    auto

or a larger training YAML holding those keys under a ``segwatch:`` section.  Every
problem raises `ConfigError` with one message that names the file, the line where
known, and the dotted key, e.g.
``example.yaml:3: dataset.num_clases: unknown key (did you mean 'num_classes'?)``.

The schema lives in the dataclasses below (field metadata ``kind`` and ``doc``);
validation, `Config.to_dict`, `format_config` and `schema_reference` all read it.
Only the standard library and PyYAML are used here.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

__all__ = [
    "ConfigError",
    "DatasetConfig",
    "TrainConfig",
    "Thresholds",
    "PolicyConfig",
    "SamplingConfig",
    "Config",
    "load_config",
    "default_config",
    "format_config",
    "schema_reference",
    "POLICY_ACTIONS",
    "ADAPTERS",
]

POLICY_ACTIONS = ("warn", "pause", "kill")
ADAPTERS = ("auto", "none", "dformer", "mmseg", "lightning", "hf")


class ConfigError(Exception):
    """A config problem.  ``str(err)`` is one line naming the file and the key.

    Attributes: ``source`` (file name or ``"<dict>"``), ``key`` (dotted key or None),
    ``line`` (1-based line in the file, or None), ``problem`` (the message alone).
    """

    def __init__(self, problem: str, key: str | None = None, source: str | None = None,
                 line: int | None = None):
        self.problem = problem
        self.key = key
        self.source = source
        self.line = line
        super().__init__(self._format())

    def _format(self) -> str:
        where = self.source or "<config>"
        if self.line is not None:
            where = f"{where}:{self.line}"
        if self.key:
            return f"{where}: {self.key}: {self.problem}"
        return f"{where}: {self.problem}"

    def __str__(self) -> str:
        return self._format()


def _f(default: Any, kind: str, doc: str, *, choices: tuple | None = None) -> Any:
    """A dataclass field carrying its schema (kind, doc, allowed values)."""
    meta = {"kind": kind, "doc": doc, "choices": choices}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class DatasetConfig:
    """``dataset:`` what the labels mean.

    - ``name``: free text shown in the UI.
    - ``num_classes``: number of classes C (>= 2); null lets segwatch take the model's
      logits channel count.  When only ``class_names`` is given, C is its length.
    - ``ignore_index``: the label value that marks unlabelled pixels: an int outside
      ``0..C-1`` (commonly -1 or 255), ``"auto"`` (segwatch infers it from the labels:
      the out-of-range value that fills padding and unlabelled areas, and says which
      value it found), or null (no ignore value: every out-of-range label is an error).
    - ``class_names``: one name per class, in class-id order (optional).
    - ``reduce_zero_label`` (extra): the loader maps label 0 to the ignore value and
      shifts the others down by one (mmseg's ADE20K convention; also what DFormer-style
      ``gt - 1`` loaders do).  Informational: it explains where an ignore value of 255
      comes from in findings and advice.
    """

    name: str | None = _f(None, "str?", "Dataset name, shown in the UI.")
    num_classes: int | None = _f(
        None, "int?",
        "Number of classes C (>= 2). null: use the logits' channel count "
        "(or the length of `class_names`).")
    ignore_index: int | str | None = _f(
        "auto", "ignore",
        "Label value of unlabelled pixels: an int outside 0..C-1 (-1, 255, ...), "
        "`auto` (inferred from the labels and reported), or null (none).")
    class_names: list[str] | None = _f(
        None, "names?", "One name per class in class-id order; length must equal C.")
    reduce_zero_label: bool = _f(
        False, "bool",
        "The loader maps label 0 to the ignore value and shifts the rest down by one "
        "(mmseg ADE20K, DFormer-style `gt - 1`). Used to explain 255 in findings.")


@dataclass
class TrainConfig:
    """``train:`` hints about the training run.

    - ``expected_lr``: the learning rate the run is meant to use; the checklist flags an
      optimizer lr that is zero or far from it.  null: only zero is flagged.
    - ``max_steps`` (extra): planned number of training steps, for progress display and
      for scaling the diagnosis windows; null when unknown.
    - ``pretrained``: ``none`` says "from scratch on purpose"; a checkpoint path or name
      says weights are expected to be loaded; null: unknown.
    """

    expected_lr: float | None = _f(
        None, "number?",
        "Intended learning rate; an optimizer lr that is 0 or far from it is flagged.")
    max_steps: int | None = _f(
        None, "int?", "Planned number of training steps (progress display), if known.")
    pretrained: str | None = _f(
        None, "pretrained",
        "`none`: training from scratch on purpose (the checklist does not ask for a "
        "load_state_dict call); a checkpoint path or name: one is expected; null: unknown.")


@dataclass
class Thresholds:
    """``thresholds:`` when diagnosis rules fire.

    - ``grad_norm_min``: total gradient norm below this is ``grad.vanishing`` (0 disables).
    - ``grad_norm_max``: total gradient norm above this is ``grad.exploding``.
    - ``min_pred_classes``: fewer distinct predicted classes is ``pred.low_diversity``
      (1 disables).  When C is known and this key was not set, it is lowered to C.
    - ``miou_stuck_evals``: the same mIoU over this many evaluations is
      ``metric.miou_stuck`` (>= 2).
    - ``collapse_share``: the top predicted class covering at least this share of the
      predicted pixels is ``pred.collapse``, in training and at evaluation alike (a few
      stray pixels of other classes do not hide a collapse); in (0.5, 1].
    """

    grad_norm_min: float = _f(
        1e-7, "number", "Total gradient norm below this: `grad.vanishing` (0 disables).")
    grad_norm_max: float = _f(
        1000.0, "number", "Total gradient norm above this: `grad.exploding`.")
    min_pred_classes: int = _f(
        5, "int",
        "Fewer distinct predicted classes than this: `pred.low_diversity` (1 disables; "
        "lowered to C when unset and C is smaller).")
    miou_stuck_evals: int = _f(
        3, "int", "mIoU identical over this many evaluations: `metric.miou_stuck` (>= 2).")
    collapse_share: float = _f(
        0.98, "number",
        "Top predicted class at or above this share of predicted pixels: `pred.collapse` "
        "(training and evaluation; stray pixels tolerated), in (0.5, 1].")


@dataclass
class PolicyConfig:
    """``policy:`` what the supervisor does about findings.

    - ``on_collapse``: action when ``pred.collapse`` is raised: warn, pause or kill.
    - ``on_nonfinite``: action when the loss or a gradient is NaN/Inf: warn, pause or kill.
    - ``grace_steps``: training steps before collapse findings may fire mid-run (early
      training often predicts one class briefly); a run that ends collapsed is reported
      when it ends, however short.
    """

    on_collapse: str = _f(
        "warn", "choice", "Action on `pred.collapse`.", choices=POLICY_ACTIONS)
    on_nonfinite: str = _f(
        "warn", "choice", "Action on `loss.nonfinite` / `grad.nonfinite`.",
        choices=POLICY_ACTIONS)
    grace_steps: int = _f(
        100, "int",
        "Training steps before `pred.collapse` may fire mid-run (>= 0); a run that ends "
        "collapsed is reported at its end.")


@dataclass
class SamplingConfig:
    """``sampling:`` how much the shim may cost.

    - ``overhead_budget``: share of training wall time the shim may spend on its own
      statistics, strictly between 0 and 1 (0.01 = 1%); probes are sampled to stay
      within it.
    - ``max_interval``: the coverage floor: every probe samples at least every this many
      training steps after the dense start, whatever the budget (>= 1). When the floor
      costs more than the budget, the floor is kept and the overhead is reported as over
      budget.
    """

    overhead_budget: float = _f(
        0.01, "number",
        "Share of training time the shim may use, in (0, 1); probes are sampled to fit.")
    max_interval: int = _f(
        32, "int",
        "Every probe samples at least every this many steps (>= 1), even over the budget.")


_SECTIONS: dict[str, type] = {
    "dataset": DatasetConfig,
    "train": TrainConfig,
    "thresholds": Thresholds,
    "policy": PolicyConfig,
    "sampling": SamplingConfig,
}
_TOP_KEYS = tuple(_SECTIONS) + ("adapter",)
_ADAPTER_DOC = ("Framework integration: " + ", ".join(f"`{a}`" for a in ADAPTERS)
                + " (`auto` detects it from the imported modules).")


@dataclass
class Config:
    """The resolved segwatch config.  ``source`` is the file it came from (not a key)."""

    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    thresholds: Thresholds = field(default_factory=Thresholds)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    adapter: str = "auto"
    source: str | None = None

    def to_dict(self) -> dict:
        """Plain dict of every setting (JSON/YAML friendly); ``from_dict`` reads it back."""
        out: dict[str, Any] = {}
        for name in _SECTIONS:
            sec = getattr(self, name)
            out[name] = {
                f.name: (list(v) if isinstance(v := getattr(sec, f.name), list) else v)
                for f in dataclasses.fields(sec)
            }
        out["adapter"] = self.adapter
        return out

    @classmethod
    def from_dict(cls, d: Any, source: str = "<dict>") -> "Config":
        """Validate a bare config dict (or one holding a ``segwatch:`` section)."""
        return _build(d, source, lines=None)


# ---------------------------------------------------------------------------
# validation

def _show(v: Any) -> str:
    r = repr(v)
    return r if len(r) <= 60 else r[:57] + "..."


def _suggest(word: str, options: tuple | list) -> str:
    close = difflib.get_close_matches(str(word), [str(o) for o in options], n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


_NUM_RE = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def _number(v: Any, key: str) -> float:
    if isinstance(v, bool):
        raise ConfigError(f"expected a number, got {_show(v)}", key)
    if isinstance(v, str) and _NUM_RE.match(v.strip()):
        # PyYAML (YAML 1.1) reads `1e-7` without a dot as a string; accept it
        v = float(v)
    if not isinstance(v, (int, float)):
        raise ConfigError(f"expected a number, got {_show(v)}", key)
    v = float(v)
    if not math.isfinite(v):
        raise ConfigError(f"expected a finite number, got {_show(v)}", key)
    return v


def _integer(v: Any, key: str) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ConfigError(f"expected an integer, got {_show(v)}", key)
    if isinstance(v, float):
        if not (math.isfinite(v) and v.is_integer()):
            raise ConfigError(f"expected an integer, got {_show(v)}", key)
        v = int(v)
    return v


def _parse_field(f: dataclasses.Field, v: Any, key: str) -> Any:
    kind: str = f.metadata["kind"]
    if kind.endswith("?"):
        if v is None:
            return None
        kind = kind[:-1]
    if kind == "str":
        if not isinstance(v, str):
            raise ConfigError(f"expected a string, got {_show(v)}", key)
        return v
    if kind == "int":
        return _integer(v, key)
    if kind == "number":
        return _number(v, key)
    if kind == "bool":
        if not isinstance(v, bool):
            raise ConfigError(f"expected true or false, got {_show(v)}", key)
        return v
    if kind == "choice":
        choices = f.metadata["choices"]
        if isinstance(v, str) and v.strip().lower() in choices:
            return v.strip().lower()
        if not isinstance(v, str) or v not in choices:
            raise ConfigError(
                f"expected one of {', '.join(choices)}, got {_show(v)}"
                + (_suggest(v, choices) if isinstance(v, str) else ""), key)
        return v
    if kind == "pretrained":
        if v is None:
            return None
        if v is False or (isinstance(v, str) and v.strip().lower() in ("none", "scratch", "no", "false")):
            return "none"   # YAML reads a bare `no`/`false` as a bool
        if not isinstance(v, str) or not v.strip():
            raise ConfigError(f"expected `none` (from scratch on purpose), a checkpoint path or null, "
                              f"got {_show(v)}", key)
        return v.strip()
    if kind == "ignore":
        if v is None:
            return None
        if isinstance(v, str):
            if v.strip().lower() == "auto":
                return "auto"
            try:
                return int(v.strip())
            except ValueError:
                pass
            raise ConfigError(f"expected an integer, 'auto' or null, got {_show(v)}", key)
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ConfigError(f"expected an integer, 'auto' or null, got {_show(v)}", key)
        return _integer(v, key)
    if kind == "names":
        if not isinstance(v, (list, tuple)):
            raise ConfigError(f"expected a list of names, got {_show(v)}", key)
        names = []
        seen: dict[str, int] = {}
        for i, n in enumerate(v):
            if isinstance(n, bool) or n is None or not isinstance(n, (str, int, float)):
                raise ConfigError(
                    f"expected a name, got {_show(n)} (quote names such as 'on', 'no' "
                    "or 'null' in YAML)", f"{key}[{i}]")
            n = str(n)
            if not n.strip():
                raise ConfigError("empty class name", f"{key}[{i}]")
            if n in seen:
                raise ConfigError(f"duplicate class name {n!r} (also at index {seen[n]})",
                                  f"{key}[{i}]")
            seen[n] = i
            names.append(n)
        return names
    raise AssertionError(f"unknown schema kind {kind!r}")  # pragma: no cover


def _parse_section(cls: type, raw: Any, name: str) -> tuple[Any, set[str]]:
    if raw is None:
        return cls(), set()
    if not isinstance(raw, dict):
        raise ConfigError(f"expected a mapping of settings, got {_show(raw)}", name)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values = {}
    for k, v in raw.items():
        key = f"{name}.{k}"
        if k not in fields:
            raise ConfigError("unknown key" + _suggest(k, tuple(fields)), key)
        values[k] = _parse_field(fields[k], v, key)
    return cls(**values), set(values)


def _split_section(d: Any) -> tuple[Any, str]:
    """Return (the segwatch settings, key prefix) from a loaded document."""
    if d is None:
        raise ConfigError("no segwatch settings (the file is empty)")
    if not isinstance(d, dict):
        raise ConfigError(f"expected a mapping at the top level, got {_show(d)}")
    if "segwatch" in d:
        sec = d["segwatch"]
        if sec is None:
            return {}, "segwatch."
        if not isinstance(sec, dict):
            raise ConfigError(f"expected a mapping of settings, got {_show(sec)}", "segwatch")
        return sec, "segwatch."
    if not any(k in _TOP_KEYS for k in d):
        raise ConfigError(
            "no segwatch settings: expected top-level keys "
            f"{', '.join(_TOP_KEYS)} or a `segwatch:` section")
    return d, ""


def _check(cfg: Config, given: dict[str, set[str]]) -> None:
    ds, th = cfg.dataset, cfg.thresholds
    if ds.class_names is not None and ds.num_classes is None:
        ds.num_classes = len(ds.class_names)
    C = ds.num_classes
    if C is not None and C < 2:
        raise ConfigError(f"must be at least 2, got {C}", "dataset.num_classes")
    if ds.class_names is not None and len(ds.class_names) != C:
        raise ConfigError(
            f"has {len(ds.class_names)} names but num_classes is {C}", "dataset.class_names")
    ii = ds.ignore_index
    if isinstance(ii, int) and C is not None and 0 <= ii < C:
        raise ConfigError(
            f"{ii} is a real class id (0..{C - 1}); the ignore value must lie outside "
            "that range (commonly -1 or 255)", "dataset.ignore_index")
    if cfg.train.expected_lr is not None and cfg.train.expected_lr <= 0:
        raise ConfigError(f"must be > 0, got {cfg.train.expected_lr:g}", "train.expected_lr")
    if cfg.train.max_steps is not None and cfg.train.max_steps < 1:
        raise ConfigError(f"must be >= 1, got {cfg.train.max_steps}", "train.max_steps")
    if th.grad_norm_min < 0:
        raise ConfigError(f"must be >= 0, got {th.grad_norm_min:g}", "thresholds.grad_norm_min")
    if th.grad_norm_max <= 0:
        raise ConfigError(f"must be > 0, got {th.grad_norm_max:g}", "thresholds.grad_norm_max")
    if th.grad_norm_min >= th.grad_norm_max:
        raise ConfigError(
            f"{th.grad_norm_min:g} is not below grad_norm_max ({th.grad_norm_max:g})",
            "thresholds.grad_norm_min")
    if th.min_pred_classes < 1:
        raise ConfigError(f"must be >= 1, got {th.min_pred_classes}",
                          "thresholds.min_pred_classes")
    if C is not None and th.min_pred_classes > C:
        if "min_pred_classes" in given.get("thresholds", ()):
            raise ConfigError(
                f"{th.min_pred_classes} is more than num_classes ({C}): the rule could "
                "never be satisfied", "thresholds.min_pred_classes")
        th.min_pred_classes = C
    if th.miou_stuck_evals < 2:
        raise ConfigError(f"must be >= 2, got {th.miou_stuck_evals}",
                          "thresholds.miou_stuck_evals")
    if not 0.5 < th.collapse_share <= 1.0:
        raise ConfigError(f"must be in (0.5, 1], got {th.collapse_share:g}",
                          "thresholds.collapse_share")
    if cfg.policy.grace_steps < 0:
        raise ConfigError(f"must be >= 0, got {cfg.policy.grace_steps}", "policy.grace_steps")
    ob = cfg.sampling.overhead_budget
    if not 0 < ob < 1:
        raise ConfigError(f"must be strictly between 0 and 1, got {ob:g}",
                          "sampling.overhead_budget")
    mi = cfg.sampling.max_interval
    if mi < 1:
        raise ConfigError(f"must be >= 1, got {mi}", "sampling.max_interval")


def _build(d: Any, source: str, lines: dict[str, int] | None) -> Config:
    prefix = ""
    try:
        body, prefix = _split_section(d)
        given: dict[str, set[str]] = {}
        parts: dict[str, Any] = {}
        adapter = "auto"
        for k, v in body.items():
            if k == "adapter":
                if v is None:
                    v = "auto"
                if isinstance(v, str) and v.strip().lower() in ADAPTERS:
                    v = v.strip().lower()
                if not isinstance(v, str) or v not in ADAPTERS:
                    raise ConfigError(
                        f"expected one of {', '.join(ADAPTERS)}, got {_show(v)}"
                        + (_suggest(v, ADAPTERS) if isinstance(v, str) else ""), "adapter")
                adapter = v
            elif k in _SECTIONS:
                parts[k], given[k] = _parse_section(_SECTIONS[k], v, k)
            else:
                hint = _suggest(k, _TOP_KEYS)
                if not hint and not prefix:
                    hint = (" (segwatch keys are " + ", ".join(_TOP_KEYS)
                            + "; in a training YAML put them under a `segwatch:` section)")
                raise ConfigError("unknown key" + hint, str(k))
        cfg = Config(**parts, adapter=adapter, source=source)
        _check(cfg, given)
        return cfg
    except ConfigError as e:
        key = f"{prefix}{e.key}" if e.key else None
        line = None
        if lines is not None and key:
            probe = key
            while probe:  # the key itself, else its nearest enclosing key
                if probe in lines:
                    line = lines[probe]
                    break
                m = re.match(r"^(.*)\[\d+\]$", probe)
                probe = m.group(1) if m else (probe.rsplit(".", 1)[0] if "." in probe else "")
        raise ConfigError(e.problem, key, source, line) from None


# ---------------------------------------------------------------------------
# loading

def _key_lines(node: Any, source: str, prefix: str = "",
               out: dict[str, int] | None = None) -> dict[str, int]:
    """Map dotted keys to 1-based lines from a composed YAML node; reject duplicates."""
    if out is None:
        out = {}
    if isinstance(node, yaml.MappingNode):
        seen: set = set()
        for knode, vnode in node.value:
            k = knode.value if isinstance(knode, yaml.ScalarNode) else None
            if k is None:
                continue
            key = f"{prefix}{k}"
            if k in seen:
                raise ConfigError("duplicate key", key, source, knode.start_mark.line + 1)
            seen.add(k)
            out[key] = knode.start_mark.line + 1
            _key_lines(vnode, source, key + ".", out)
    elif isinstance(node, yaml.SequenceNode):
        base = prefix[:-1]
        for i, item in enumerate(node.value):
            out[f"{base}[{i}]"] = item.start_mark.line + 1
    return out


def load_config(path: str | os.PathLike) -> Config:
    """Read and validate a YAML config file (bare, or with a ``segwatch:`` section)."""
    source = os.fspath(path)
    try:
        with open(source, encoding="utf-8") as fh:
            text = fh.read()
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise ConfigError(f"cannot read the file: {reason}", source=source) from None
    try:
        data = yaml.safe_load(text)
        node = yaml.compose(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        ctx = getattr(e, "context", None)
        msg = f"YAML syntax error: {problem}" + (f" ({ctx})" if ctx else "")
        raise ConfigError(msg, source=source,
                          line=mark.line + 1 if mark is not None else None) from None
    lines: dict[str, int] = {}
    if node is not None:
        if (isinstance(data, dict) and "segwatch" in data
                and isinstance(node, yaml.MappingNode)):
            # only the segwatch section must be free of duplicate keys
            for knode, vnode in node.value:
                if isinstance(knode, yaml.ScalarNode) and knode.value == "segwatch":
                    lines["segwatch"] = knode.start_mark.line + 1
                    _key_lines(vnode, source, "segwatch.", lines)
        else:
            _key_lines(node, source, "", lines)
    return _build(data, source, lines)


def default_config() -> Config:
    """All defaults: C from the logits, ignore value inferred (``auto``)."""
    return Config(source=None)


# ---------------------------------------------------------------------------
# output

class _ReadableDumper(yaml.SafeDumper):
    """Block style for sections, flow style (wrapped) for lists such as class_names."""


_ReadableDumper.add_representer(
    list, lambda d, v: d.represent_sequence("tag:yaml.org,2002:seq", v, flow_style=True))


def format_config(cfg: Config) -> str:
    """A readable YAML dump of the resolved config (used by ``segwatch check``)."""
    head = [f"# segwatch config resolved from {cfg.source or 'defaults'}"]
    ds = cfg.dataset
    if ds.num_classes is None:
        head.append("# num_classes: null -> taken from the model's logits channels")
    if ds.ignore_index == "auto":
        head.append("# ignore_index: auto -> inferred from the labels at run time")
    elif ds.ignore_index is None:
        head.append("# ignore_index: null -> no ignore value; every label outside "
                    "0..C-1 is reported")
    body = yaml.dump(cfg.to_dict(), Dumper=_ReadableDumper, sort_keys=False,
                     default_flow_style=False, width=88, allow_unicode=True)
    return "\n".join(head) + "\n" + body


def _fmt_default(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def _type_name(f: dataclasses.Field) -> str:
    kind = f.metadata["kind"]
    opt = kind.endswith("?")
    base = kind.rstrip("?")
    name = {
        "str": "string", "int": "integer", "number": "number", "bool": "bool",
        "names": "list of strings", "ignore": "integer, `auto` or null",
        "pretrained": "`none`, a path or null",
        "choice": " \\| ".join(f"`{c}`" for c in (f.metadata["choices"] or ())),
    }[base]
    return name + (" or null" if opt else "")


def schema_reference() -> str:
    """A Markdown table of every config key: type, default and meaning."""
    rows = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for sec, cls in _SECTIONS.items():
        for f in dataclasses.fields(cls):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            doc = f.metadata["doc"].replace("|", "\\|")
            rows.append(f"| `{sec}.{f.name}` | {_type_name(f)} | `{_fmt_default(default)}` "
                        f"| {doc} |")
    adapters = " \\| ".join(f"`{a}`" for a in ADAPTERS)
    rows.append(f"| `adapter` | {adapters} | `auto` | {_ADAPTER_DOC} |")
    return "\n".join(rows) + "\n"
