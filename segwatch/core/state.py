"""RunState: everything a viewer or a report needs, rebuilt from the event stream.

``RunState.ingest(event)`` folds one event (docs/EVENTS.md) into bounded state and runs
the diagnosis rules that listen to that event type; it returns the findings raised for
the first time by that event. The same events in the same order always give the same
state and the same findings (this is how ``replay`` works), so the mirror ``finding``
events written by the supervisor are not used for diagnosis.

numpy + stdlib only: no torch, textual, sockets or subprocess (DESIGN.md layer rules).
"""
from __future__ import annotations

import math
from collections import deque
from typing import Any, Iterable

import numpy as np

from ..protocol import as_float
from . import metrics as _metrics
from .coerce import fint as _int
from .findings import Finding
from .progress import LoopProgress
from .series import Reading, Series

REPORT_SCHEMA = "segwatch.report/1"

# Defaults used when no Config is available (they mirror segwatch/config.py).
_DEFAULTS = {
    ("thresholds", "grad_norm_min"): 1e-7,
    ("thresholds", "grad_norm_max"): 1000.0,
    ("thresholds", "min_pred_classes"): 5,
    ("thresholds", "miou_stuck_evals"): 3,
    ("policy", "on_collapse"): "warn",
    ("policy", "on_nonfinite"): "warn",
    ("policy", "grace_steps"): 100,
    ("sampling", "overhead_budget"): 0.01,
    ("train", "expected_lr"): None,
    ("dataset", "num_classes"): None,
    ("dataset", "ignore_index"): None,
    ("dataset", "class_names"): None,
    ("dataset", "name"): None,
}

#: Finding ids whose policy is ``policy.on_collapse`` / ``policy.on_nonfinite``.
COLLAPSE_IDS = frozenset({"pred.collapse", "metric.single_class_signature"})
NONFINITE_IDS = frozenset({"loss.nonfinite", "grad.nonfinite"})

_MAX_OUTPUT_LINES = 2000
#: steps between two samples of a probe when the shim has not said (no ``overhead`` event yet)
DEFAULT_PROBE_INTERVAL = 64
_MAX_LIST = 10000  # evals, script metrics, actions: bounded too (they grow per evaluation)


def _default_config():
    try:
        from ..config import default_config
    except Exception:  # config module missing or broken: run on built-in defaults
        return None
    try:
        return default_config()
    except Exception:
        return None


def _config_from_dict(d: dict):
    from ..config import Config

    return Config.from_dict(d, source="<hello>")


def _is_sanity(ev: dict, step: int | None) -> bool:
    """A sanity evaluation: flagged by an adapter (Lightning's ``trainer.sanity_checking``), or a
    pass that ended cleanly before the first optimizer step after fewer batches than its loader
    holds (a framework checking that validation runs). Its matrix stays in ``evals``, its mIoU
    out of the mIoU history (report, trend and regression rules): an untrained model on one
    batch is not a point of the curve."""
    if ev.get("sanity") is True:
        return True
    batches, expected = _int(ev.get("batches")), _int(ev.get("expected"))
    return (not ev.get("aborted") and (step or 0) == 0
            and batches is not None and expected is not None and 0 < batches < expected)


def _same_hw(label_shape: Any, image_shape: Any) -> bool | None:
    """Whether a label batch has its images' spatial size (last two dims); None when unknown."""
    try:
        if not isinstance(label_shape, (list, tuple)) or not isinstance(image_shape, (list, tuple)) \
                or len(label_shape) < 2 or len(image_shape) < 2:
            return None
        return [int(x) for x in label_shape[-2:]] == [int(x) for x in image_shape[-2:]]
    except (TypeError, ValueError):
        return None


def _hist(v: Any) -> np.ndarray | None:
    if not isinstance(v, (list, tuple)) or not v:
        return None
    try:
        return np.asarray(v, dtype=np.int64)
    except (TypeError, ValueError):
        return None


class RunState:
    """Bounded, deterministic state of one run, built from its events.

    Read-only attributes for viewers (docs/ARCHITECTURE.md):

    - identity: ``config``, ``script``, ``pid``, ``status`` (starting|running|paused|finished|
      killed|failed|lost), ``exit_code``, ``started``/``ended`` (unix s), ``world_size``
    - progress: ``step`` (max training step seen), ``epoch``, ``steps_per_sec``
    - dataset: ``num_classes``, ``class_names`` (or None), ``ignore_index`` (int|"auto"|None),
      ``inferred_ignore`` (e.g. 255), ``label_totals`` {phase: [pixels, ignore, oor]}
    - series (``Series``: steps(), values(), last(), tail(n), len): ``loss``, ``grad_norm``,
      ``lr`` (max over groups; ``lr_groups`` = last list), ``update_ratio``,
      ``pred_unique`` and ``dominant_share`` (training preds samples)
    - last samples: ``layer_norms`` [(name, norm)], ``last_labels`` (batch.labels dict),
      ``last_inputs`` (batch.inputs list), ``pred_hist``/``gt_hist`` (np int64, last preds),
      ``label_hist``/``val_label_hist`` (cumulative np int64)
    - evaluation: ``miou`` [(step, guide %, mmseg %)], ``confusion`` (last C x C np int64 or
      None), ``evals`` [summary dicts: index, step, miou, miou_mmseg, pixel_acc, pred_classes,
      gt_classes, aborted, exception, pixels, oor, size_mismatch, ...],
      ``script_metrics`` [(step, value)]
    - readings (``Reading``: value, step, probe): ``readings[name]`` is the last measured value
      of everything a viewer shows (loss, grad_norm, lr, update_ratio, layer_norms,
      sampled_step, preds, labels, inputs, miou, eval, overhead); ``reading(name)``,
      ``is_old(reading)`` (older than twice its probe's sampling interval), ``age(reading)``
    - diagnosis: ``findings`` {id: Finding} (first-raised order), ``checklist`` (property:
      9 ``ChecklistItem``), ``policy_for(finding)`` -> warn|pause|kill
    - supervisor side: ``actions`` [dicts], ``output`` deque[(stream, line)] (last 2000),
      ``proc``, ``overhead``, ``probes_disabled``, ``counters`` (events, invalid, dropped,
      mirrored_findings, errors), ``errors`` (first few internal exceptions)
    - GPU side: ``gpu`` (last ``gpu`` event: devices, t, step), ``cuda_allocated`` (Series of
      ``step.cuda_mem.allocated``), ``cuda_peak``, ``data_wait_share`` (over the last 16 step
      events), ``loader_facts`` (num_workers, pin_memory), ``images_per_sec``; readings
      ``cuda_mem`` and ``data_wait``
    """

    def __init__(self, config=None, lang: str = "en", history: int = 4096) -> None:
        from .diagnosis import build_rules

        self._config_given = config is not None
        self.config = config if config is not None else _default_config()
        self.lang = lang
        self.history = int(history)

        # identity / lifecycle
        self.script: str | None = None
        self.argv: list | None = None
        self.pid: int | None = None            # the training process (hello / status)
        self.status: str = "starting"
        self.exit_code: int | None = None
        self.signal: int | None = None
        self.started: float | None = None
        self.ended: float | None = None
        self.hello: dict | None = None
        self.device: str | None = None
        self.world_size: int = 1

        # progress
        self.step: int = 0
        self.epoch: int | None = None   # passes over the training loader, as the shim counts them
        self.loop = LoopProgress()      # batch i/N now, passes of next()-driven loaders, the printed epoch
        self.steps_per_sec: float | None = None
        self._rate = deque(maxlen=64)  # (t, step) of recent step events

        # dataset facts
        self.num_classes: int | None = None
        self.class_names: list[str] | None = None   # the config's, else the framework's
        self.class_names_source: str | None = None  # "config" | the framework ("hf", "mmseg", ...)
        self.ignore_index: int | str | None = None
        self.inferred_ignore: int | None = None
        self.oor_totals: dict[int, int] = {}   # cumulative out-of-range label values

        # model
        self.model: dict | None = None
        self.out_channels: int | None = None
        self.state_dicts: list[dict] = []
        # the loss function(s) of the training (``lossfn`` events): the latest configuration,
        # and every distinct one seen (bounded)
        self.lossfn: dict | None = None
        self.lossfns: list[dict] = []
        # the framework's reduce_zero_label (mmseg dataset, a ``dataset_facts`` probe note)
        self.framework_reduce_zero_label: bool | None = None

        # series (rank 0)
        h = self.history
        self.loss = Series(h, "loss")
        self.grad_norm = Series(h, "grad_norm")
        self.lr = Series(h, "lr")                 # max lr over param groups
        self.update_ratio = Series(h, "update_ratio")
        self.pred_unique = Series(h, "pred_unique")   # training preds samples
        self.dominant_share = Series(h, "dominant_share")
        self.lr_groups: list[float] = []
        # one entry per shown value: what it was and the step it was measured at
        self.readings: dict[str, Reading] = {}
        self._probe_steps: dict[str, tuple[int, int]] = {}   # probe -> its last two steps
        self.layer_norms: list[tuple[str, float]] = []
        self.last_step_event: dict | None = None

        # labels / inputs / predictions
        self.last_labels: dict | None = None
        self.label_hist: np.ndarray = np.zeros(0, dtype=np.int64)     # cumulative, training
        self.val_label_hist: np.ndarray = np.zeros(0, dtype=np.int64)
        self.last_inputs: list[dict] = []
        self.image_shape: list | None = None
        self.pred_hist: np.ndarray = np.zeros(0, dtype=np.int64)      # last preds sample
        self.gt_hist: np.ndarray = np.zeros(0, dtype=np.int64)        # its label histogram
        self.pred_phase: str | None = None
        self.batches = {"train": 0, "val": 0}
        # cumulative label pixels per phase: [total, ignore, out-of-range]
        self.label_totals = {"train": [0, 0, 0], "val": [0, 0, 0]}
        # validation labels of the evaluation pass in progress: [pixels, in-range pixels, batches,
        # batches whose labels have their images' H, W, batches whose labels do not]
        self._val_pass = [0, 0, 0, 0, 0]

        # evaluation
        self.miou: list[tuple[int, float, float]] = []   # (step, guide, mmseg)
        self.confusion: np.ndarray | None = None
        self.evals: list[dict] = []
        self.evals_total: int = 0                        # evaluations folded in (merged, for ranks)
        self.script_metrics: list[tuple[int, float]] = []
        self.script_metric_events: list[dict] = []

        # supervisor side
        self.actions: list[dict] = []
        self.output: deque = deque(maxlen=_MAX_OUTPUT_LINES)
        self.proc: dict | None = None
        # GPU side (issue 19): the last ``gpu`` event (NVML, per device), CUDA memory after each
        # step's backward (``step.cuda_mem``), DataLoader wait vs wall time (``step.data_wait``)
        self.gpu: dict | None = None
        self.cuda_allocated = Series(h, "cuda_allocated")
        self.cuda_peak: int | None = None
        self._data_wait: deque = deque(maxlen=16)   # (data_wait s, wall s) of recent step events
        self.data_wait_share: float | None = None
        self.loader_facts: dict = {}   # num_workers / pin_memory where the shim knows them
        self.overhead: dict | None = None
        self.probes_disabled: list[str] = []
        self.probe_notes: deque = deque(maxlen=100)
        self.bye: dict | None = None
        self.counters: dict[str, int] = {
            "events": 0, "invalid": 0, "dropped": 0, "mirrored_findings": 0, "errors": 0,
        }
        self.errors: list[str] = []   # first few handler/rule exceptions (a bug, not user data)

        # distributed runs (world_size > 1): per-rank views; merged evaluations
        self.ranks: list[int] = []                      # ranks seen, sorted
        # the rank whose events drive the main series: 0, or on node k of a multi-node run (one
        # supervisor per node) that node's first rank (RANK - LOCAL_RANK from its hello)
        self.lead_rank: int = 0
        self.local_world_size: int | None = None        # ranks that report to this supervisor
        self.rank_loss: dict[int, Series] = {}
        self.rank_grad_norm: dict[int, Series] = {}
        self.rank_step: dict[int, int] = {}
        self.rank_last_t: dict[int, float] = {}
        self.rank_bye: dict[int, dict] = {}
        self.rank_loss_nonfinite: dict[int, int] = {}
        self.rank_pred_hist: dict[int, np.ndarray] = {}   # last preds sample of each rank
        self.rank_confusion: dict[int, np.ndarray] = {}   # each rank's part of the last merged eval
        self._eval_parts: dict[int, dict] = {}            # eval index -> {"events": {rank: ev}, "step": int}

        # diagnosis
        self.findings: dict[str, Finding] = {}
        self._rules = build_rules()
        self._rules_by_type: dict[str, list] = {}
        for rule in self._rules:
            for typ in rule.events:
                self._rules_by_type.setdefault(typ, []).append(rule)

        self._handlers = {
            "hello": self._on_hello, "model": self._on_model, "batch": self._on_batch,
            "preds": self._on_preds, "step": self._on_step, "eval": self._on_eval,
            "state_dict": self._on_state_dict, "lossfn": self._on_lossfn, "probe": self._on_probe,
            "overhead": self._on_overhead, "script_metric": self._on_script_metric,
            "bye": self._on_bye, "output": self._on_output, "status": self._on_status,
            "action": self._on_action, "proc": self._on_proc, "finding": self._on_finding,
            "gpu": self._on_gpu,
        }
        self._apply_config()

    # ------------------------------------------------------------------ config access
    def cfg(self, section: str, key: str, default: Any = None) -> Any:
        """A config value, or the built-in default when there is no config."""
        sec = getattr(self.config, section, None) if self.config is not None else None
        if sec is not None:
            val = getattr(sec, key, None)
            if val is not None:
                return val
        d = _DEFAULTS.get((section, key))
        return d if d is not None else default

    @property
    def grace_steps(self) -> int:
        return int(self.cfg("policy", "grace_steps", 100))

    @property
    def configured_num_classes(self) -> int | None:
        nc = _int(self.cfg("dataset", "num_classes"))
        if nc is None:
            names = self.cfg("dataset", "class_names")
            if names:
                nc = len(names)
        return nc

    def _apply_config(self) -> None:
        nc = self.configured_num_classes
        if nc:
            self.num_classes = nc
        names = self.cfg("dataset", "class_names")
        if names:
            self.class_names = list(names)
            self.class_names_source = "config"
        self.ignore_index = self.cfg("dataset", "ignore_index")

    def _framework_class_names(self, names: Any, source: Any) -> None:
        """Class names the framework knows (HF ``id2label``, mmseg metainfo, a DFormer-style
        ``class_names``), used when the config names none: the config comes first."""
        if self.class_names_source == "config" or not isinstance(names, (list, tuple)) or not names:
            return
        self.class_names = [str(n) for n in names]
        self.class_names_source = str(source or "framework")

    def set_config(self, config) -> None:
        self.config = config
        self._config_given = True
        self._apply_config()

    # ------------------------------------------------------------------ helpers for rules
    def class_name(self, c: int | None) -> str | None:
        """Class ``c``'s name: the config's, else the framework's, else ``class 7``
        (None only without a class)."""
        if c is None:
            return None
        if self.class_names and 0 <= c < len(self.class_names) and self.class_names[c]:
            return str(self.class_names[c])
        return f"class {c}"

    @property
    def effective_ignore(self) -> int | None:
        """The ignore value in force: the configured int, or the inferred one under auto."""
        ig = self.ignore_index
        if isinstance(ig, str) and ig.lower() == "auto":
            return self.inferred_ignore
        return _int(ig)

    @property
    def ignore_is_auto(self) -> bool:
        return isinstance(self.ignore_index, str) and self.ignore_index.lower() == "auto"

    def is_ignore_candidate(self, v: int) -> bool:
        """Could ``v`` be an "unlabeled" marker? Negative, >= 255, or far above num_classes."""
        C = self.num_classes or 0
        return v < 0 or v >= 255 or (C > 0 and v >= 2 * C)

    def loss_ratio(self, last: int | None = None, min_samples: int = 8) -> float | None:
        """mean(last quarter) / mean(first quarter) of the finite losses (of the last ``last``
        samples, or all kept). < 1 means falling. None with too few samples."""
        vals = self.loss.tail(last) if last else self.loss.values()
        vals = vals[np.isfinite(vals)]
        n = len(vals)
        if n < min_samples:
            return None
        q = max(n // 4, 1)
        first = float(vals[:q].mean())
        lastm = float(vals[-q:].mean())
        if first <= 0:
            return None if lastm <= 0 else math.inf
        return lastm / first

    def loss_falling_fast(self) -> bool | None:
        """True when the loss over the kept history dropped by at least 20 %."""
        r = self.loss_ratio()
        return None if r is None else r < 0.8

    def loss_still_falling(self, window: int = 40) -> bool | None:
        """True while the recent losses still fall (last quarter < 0.97 x first quarter)."""
        r = self.loss_ratio(last=window)
        return None if r is None else r < 0.97

    def latest_eval(self) -> dict | None:
        return self.evals[-1] if self.evals else None

    # ------------------------------------------------------------------ readings and their age
    def _read(self, name: str, value: Any, step: int, probe: str) -> None:
        self.readings[name] = Reading(value, step, probe)

    def _note_gap(self, probe: str, step: int) -> None:
        """Keep the last two steps of a reading the shim does not schedule (its interval)."""
        last = self._probe_steps.get(probe)
        if last is None:
            self._probe_steps[probe] = (step, step)
        elif step > last[1]:
            self._probe_steps[probe] = (last[1], step)

    def reading(self, name: str) -> Reading | None:
        """The last measured value of ``name`` (see ``readings``), or None."""
        return self.readings.get(name)

    def probe_interval(self, probe: str | None) -> int:
        """Steps between two samples of ``probe``, as the shim's last ``overhead`` event says.
        What the shim does not schedule (evaluations, the overhead reports themselves) comes
        as often as it comes: the last gap seen, at least ``DEFAULT_PROBE_INTERVAL``; that is
        also the interval of a probe the shim has not reported on yet."""
        intervals = self.overhead.get("intervals") if isinstance(self.overhead, dict) else None
        if isinstance(intervals, dict) and probe:
            iv = _int(intervals.get(probe))
            if iv is not None and iv > 0:
                return iv
            if probe not in intervals:
                prev, last = self._probe_steps.get(probe, (0, 0))
                return max(DEFAULT_PROBE_INTERVAL, last - prev)
        return DEFAULT_PROBE_INTERVAL

    def age(self, reading: Reading | str | None) -> int | None:
        """Training steps since ``reading`` was measured (None when there is none)."""
        r = self.readings.get(reading) if isinstance(reading, str) else reading
        if r is None:
            return None
        return max(0, self.step - r.step)

    def is_old(self, reading: Reading | str | None) -> bool:
        """True when ``reading`` is older than twice its probe's sampling interval: it must
        not be shown as current (viewers show it with its step)."""
        r = self.readings.get(reading) if isinstance(reading, str) else reading
        if r is None:
            return False
        return self.step - r.step > 2 * self.probe_interval(r.probe)

    # ------------------------------------------------------------------ ingest
    def ingest(self, event: dict) -> list[Finding]:
        """Fold one event into the state; return the findings it raised for the first time."""
        self.counters["events"] += 1
        if not isinstance(event, dict):
            self.counters["invalid"] += 1
            return []
        typ = event.get("type")
        handler = self._handlers.get(typ)
        if handler is None:
            if typ not in ("control", "ack"):
                self.counters["invalid"] += 1
            return []
        rank = event.get("rank") or 0
        ws = event.get("world_size")
        dist = isinstance(ws, int) and not isinstance(ws, bool) and ws > 1
        merged: list[dict] = []
        try:
            if dist:
                self._on_rank_event(event)
            if dist and typ == "eval":
                # the ranks' passes of one evaluation become one event (summed matrices)
                merged = self._stash_eval(event)
            elif rank == self.lead_rank or typ in ("probe", "bye", "overhead"):
                handler(event)
            else:
                self._on_other_rank(event)
            if self._eval_parts and typ in ("step", "bye", "status"):
                merged.extend(self._flush_evals(event))
        except Exception as exc:  # a garbled event must never stop the viewer
            self.counters["invalid"] += 1
            self._note_error(f"{typ}: {type(exc).__name__}: {exc}")
            return []
        new = self._run_rules(typ, event, rank, all_ranks_only=dist and typ == "eval")
        for m in merged:
            try:
                self._on_eval(m)
            except Exception as exc:
                self.counters["invalid"] += 1
                self._note_error(f"eval (merged): {type(exc).__name__}: {exc}")
                continue
            new.extend(self._run_rules("eval", m, self.lead_rank, skip_all_ranks=True))
        return new

    def _run_rules(self, typ: str, event: dict, rank: int, all_ranks_only: bool = False,
                   skip_all_ranks: bool = False) -> list[Finding]:
        new: list[Finding] = []
        for rule in self._rules_by_type.get(typ, ()):
            if rank != self.lead_rank and not rule.all_ranks:
                continue
            if (all_ranks_only and not rule.all_ranks) or (skip_all_ranks and rule.all_ranks):
                continue
            try:
                out = rule.check(self, event)
            except Exception as exc:
                self.counters["errors"] += 1
                self._note_error(f"rule {rule.id}: {type(exc).__name__}: {exc}")
                continue
            if out is None:
                continue
            for f in (out if isinstance(out, list) else (out,)):
                if self.raise_finding(f):
                    new.append(f)
        return new

    def ingest_many(self, events: Iterable[dict]) -> list[Finding]:
        new: list[Finding] = []
        for ev in events:
            new.extend(self.ingest(ev))
        return new

    def raise_finding(self, f: Finding) -> bool:
        """Record a finding; True when it is new, False when it updated an existing one."""
        old = self.findings.get(f.id)
        if old is None:
            self.findings[f.id] = f
            return True
        old.update(f)
        return False

    def _note_error(self, msg: str) -> None:
        if len(self.errors) < 20:
            self.errors.append(msg)

    def policy_for(self, finding: Finding | str) -> str:
        """What the config's policy says to do for a finding: "warn", "pause" or "kill"."""
        fid = finding if isinstance(finding, str) else finding.id
        if fid in COLLAPSE_IDS:
            return str(self.cfg("policy", "on_collapse", "warn"))
        if fid in NONFINITE_IDS:
            return str(self.cfg("policy", "on_nonfinite", "warn"))
        return "warn"

    # ------------------------------------------------------------------ handlers
    def _see_step(self, ev: dict) -> int:
        s = _int(ev.get("step"))
        if s is None:
            return self.step
        if s > self.step:
            self.step = s
        return s

    def _on_hello(self, ev: dict) -> None:
        self.hello = ev
        self._note_loader_facts(ev)
        self.script = ev.get("script") or self.script
        self.argv = ev.get("argv")
        self.pid = _int(ev.get("pid")) or self.pid
        self.device = ev.get("device")
        self.world_size = _int(ev.get("world_size")) or self.world_size
        if self.started is None:
            self.started = as_float(ev.get("t"))
        cfg = ev.get("config")
        if isinstance(cfg, dict) and cfg and not self._config_given:
            try:
                self.config = _config_from_dict(cfg)
            except Exception as exc:
                self._note_error(f"hello config: {type(exc).__name__}: {exc}")
            else:
                self._apply_config()
        if self.status == "starting":
            self.status = "running"

    def _on_model(self, ev: dict) -> None:
        self._see_step(ev)
        self.model = {k: ev.get(k) for k in ("cls", "params", "trainable", "site", "out_channels", "num_classes")}
        self._framework_class_names(ev.get("class_names"), ev.get("class_names_source"))
        oc = _int(ev.get("out_channels"))
        if oc:
            self.out_channels = oc
            if not self.num_classes:
                self.num_classes = oc

    def _fit(self, arr: np.ndarray, n: int) -> np.ndarray:
        if len(arr) >= n:
            return arr
        out = np.zeros(n, dtype=np.int64)
        out[: len(arr)] = arr
        return out

    def _add_label_counts(self, phase: Any, labels: dict, lead: bool,
                          image_shape: Any = None) -> np.ndarray | None:
        """Add one batch's label counts (totals, the validation pass's counts, the class
        histogram) to the run's, whichever rank sent it; returns the batch's histogram.
        The lead rank's batches of any non-val phase count as training; other ranks' only
        when they say "train"."""
        tot = self.label_totals.get(phase)
        if tot is not None:
            tot[0] += _int(labels.get("total")) or 0
            tot[1] += _int(labels.get("ignore")) or 0
            oor_d = labels.get("oor")
            if isinstance(oor_d, dict):
                tot[2] += sum(_int(c) or 0 for c in oor_d.values())
        h = _hist(labels.get("hist"))
        if phase == "val":
            self._val_pass[0] += _int(labels.get("total")) or 0
            self._val_pass[1] += int(h.sum()) if h is not None else 0
            self._val_pass[2] += 1
            fit = _same_hw(labels.get("shape"), image_shape)
            if fit is not None:
                self._val_pass[3 if fit else 4] += 1
        if h is not None:
            if phase == "val":
                self.val_label_hist = self._fit(self.val_label_hist, len(h))
                self.val_label_hist[: len(h)] += h
            elif lead or phase == "train":
                self.label_hist = self._fit(self.label_hist, len(h))
                self.label_hist[: len(h)] += h
        return h

    def _on_batch(self, ev: dict) -> None:
        s = self._see_step(ev)
        phase = ev.get("phase")
        if phase in self.batches:
            self.batches[phase] += 1
        ep = _int(ev.get("epoch"))
        if ep is not None and phase == "train":
            self.epoch = ep
        if phase == "train":
            self.loop.on_batch(ev, s)
            self._note_loader_facts(ev)
        inputs = ev.get("inputs")
        if isinstance(inputs, list):
            self.last_inputs = inputs
            self._read("inputs", inputs, s, "batch")
        if ev.get("image_shape") is not None:
            self.image_shape = ev.get("image_shape")
        labels = ev.get("labels")
        if not isinstance(labels, dict):
            return
        self.last_labels = labels
        self._read("labels", labels, s, "batch")
        h = self._add_label_counts(phase, labels, lead=True, image_shape=ev.get("image_shape"))
        if h is not None and not self.num_classes:
            self.num_classes = len(h)
        # the ignore value the shim applied (under auto, once it inferred one)
        iv = _int(labels.get("ignore_value"))
        if iv is not None and self.ignore_is_auto and self.inferred_ignore is None:
            self.inferred_ignore = iv
        oor = labels.get("oor")
        if isinstance(oor, dict) and oor:
            for k, c in oor.items():
                v, n = _int(k), _int(c)
                if v is None or not n:
                    continue
                if v in self.oor_totals or len(self.oor_totals) < 256:
                    self.oor_totals[v] = self.oor_totals.get(v, 0) + n
            self._infer_ignore()

    def _infer_ignore(self) -> None:
        """The ignore-like out-of-range value with the most pixels so far (e.g. 255)."""
        best, best_n = None, 0
        for v, n in self.oor_totals.items():
            if self.is_ignore_candidate(v) and (n > best_n or (n == best_n and best is not None and v > best)):
                best, best_n = v, n
        if best is not None:
            self.inferred_ignore = best

    def _on_preds(self, ev: dict) -> None:
        s = self._see_step(ev)
        ch = _int(ev.get("channels"))
        if ch and not self.num_classes:
            self.num_classes = ch
        if ch and self.out_channels is None:
            self.out_channels = ch
        h = _hist(ev.get("hist"))
        if h is None:
            return
        self.pred_hist = h
        g = _hist(ev.get("gt_hist"))
        self.gt_hist = g if g is not None else np.zeros(0, dtype=np.int64)
        self.pred_phase = ev.get("phase")
        if ev.get("phase") == "train":
            total = int(h.sum())
            uniq = _int(ev.get("unique"))
            if uniq is None:
                uniq = int(np.count_nonzero(h))
            share = (int(h.max()) / total) if total else math.nan
            self.pred_unique.append(s, uniq)
            self.dominant_share.append(s, share)
            self._read_preds(s, "preds", "train", uniq, h, self.gt_hist, total=total, share=share)

    def _read_preds(self, step: int, probe: str, phase: str, unique: int, hist: np.ndarray,
                    gt_hist: np.ndarray, eval_index: int | None = None, total: int | None = None,
                    share: float | None = None) -> None:
        """The one ``preds`` reading that the header, the checklist and the Preds panel all
        quote: the last training sample, or the last evaluation pass when it is newer."""
        if total is None:
            total = int(hist.sum()) if hist.size else 0
        if share is None:
            share = (int(hist.max()) / total) if total else math.nan
        self._read("preds", {
            "unique": int(unique), "phase": phase, "eval_index": eval_index,
            "dominant_class": int(hist.argmax()) if total else None,
            "dominant_share": share,
            "hist": hist, "gt_hist": gt_hist,
            "gt_classes": int(np.count_nonzero(gt_hist)) if gt_hist.size else None,
        }, step, probe)

    def _on_step(self, ev: dict) -> None:
        s = self._see_step(ev)
        self.last_step_event = ev
        self._read_gpu_side(ev, s)
        if ev.get("sampled") is not False:
            # the gradient / update fields of a sampled step (a read-back's light step has none)
            self._read("sampled_step", ev, s, "grads")
        try:
            loss = as_float(ev.get("loss"))
        except Exception:
            loss = None
        self.loss.append(s, loss)
        if loss is not None:
            self._read("loss", loss, s, "readback")
        try:
            gn = as_float(ev.get("grad_norm"))
        except Exception:
            gn = None
        if gn is not None:
            self.grad_norm.append(s, gn)
            self._read("grad_norm", gn, s, "grads")
        lr = ev.get("lr")
        if isinstance(lr, (int, float)) and not isinstance(lr, bool):
            lr = [lr]
        if isinstance(lr, list) and lr:
            vals = []
            for x in lr:
                try:
                    f = as_float(x)
                except Exception:
                    f = None
                if f is not None:
                    vals.append(f)
            if vals:
                self.lr_groups = vals
                self.lr.append(s, max(vals))
                self._read("lr", max(vals), s, "readback")
        ur = ev.get("update_ratio")
        if ur is not None:
            try:
                self.update_ratio.append(s, as_float(ur))
                self._read("update_ratio", as_float(ur), s, "update")
            except Exception:
                pass
        ln = ev.get("layer_norms")
        if isinstance(ln, list):
            norms = []
            for p in ln:
                if isinstance(p, (list, tuple)) and len(p) >= 2:
                    try:
                        norms.append((str(p[0]), as_float(p[1])))
                    except Exception:
                        norms.append((str(p[0]), None))
            self.layer_norms = norms
            self._read("layer_norms", norms, s, "grads")
        ep = _int(ev.get("epoch"))
        if ep is not None:
            self.epoch = ep
        t = ev.get("t")
        if isinstance(t, (int, float)):
            self._rate.append((float(t), s))
            if len(self._rate) >= 2:
                t0, s0 = self._rate[0]
                t1, s1 = self._rate[-1]
                if t1 > t0:
                    self.steps_per_sec = (s1 - s0) / (t1 - t0)

    def _on_eval(self, ev: dict) -> None:
        s = self._see_step(ev)
        summary = {
            "index": _int(ev.get("index")), "step": s, "batches": ev.get("batches"),
            "expected": ev.get("expected"), "aborted": bool(ev.get("aborted")),
            "exception": ev.get("exception"), "oor": ev.get("oor"),
            "size_mismatch": ev.get("size_mismatch"), "pixels": ev.get("pixels"),
            "miou": None, "miou_mmseg": None, "pixel_acc": None,
            "pred_classes": None, "gt_classes": None, "t": ev.get("t"),
            # what the validation batches of this pass carried (seen by the batch probe)
            "label_pixels": self._val_pass[0], "label_valid": self._val_pass[1],
            "label_batches": self._val_pass[2],
            # did the loader's labels have their images' size? (then a prediction of another
            # size comes from the script feeding the model rescaled or cropped images)
            "label_size_fit": self._val_pass[3], "label_size_differs": self._val_pass[4],
        }
        self._val_pass = [0, 0, 0, 0, 0]
        summary["sanity"] = _is_sanity(ev, s)
        self.evals_total += 1
        nc = _int(ev.get("num_classes"))
        if nc and not self.num_classes:
            self.num_classes = nc
        m = ev.get("matrix")
        if isinstance(m, list) and m:
            mat = np.asarray(m, dtype=np.int64)
            if mat.ndim == 2 and mat.shape[0] == mat.shape[1]:
                self.confusion = mat
                total = int(mat.sum())
                summary["pixels"] = total
                gt, pred, _ = _metrics.class_totals(mat)
                summary["pred_classes"] = int(np.count_nonzero(pred))
                summary["gt_classes"] = int(np.count_nonzero(gt))
                if total > 0:
                    g = _metrics.miou_guide(mat)
                    mm = _metrics.miou_mmseg(mat)
                    summary["miou"] = g
                    summary["miou_mmseg"] = mm
                    summary["pixel_acc"] = _metrics.pixel_accuracy(mat)
                    if not summary["aborted"] and not summary["sanity"]:
                        self._append_bounded(self.miou, (s, g, mm))
                        self._read("miou", (g, mm, len(self.miou)), s, "eval")
                    self._read_preds(s, "eval", "val", summary["pred_classes"], pred, gt,
                                     eval_index=summary["index"])
                else:
                    summary["miou"] = 0.0
        self._append_bounded(self.evals, summary)
        self._read("eval", summary, s, "eval")
        self._note_gap("eval", s)

    @staticmethod
    def _append_bounded(lst: list, item: Any) -> None:
        lst.append(item)
        if len(lst) > _MAX_LIST:
            del lst[: len(lst) - _MAX_LIST]

    def _on_state_dict(self, ev: dict) -> None:
        self._see_step(ev)
        self._append_bounded(self.state_dicts, {
            k: ev.get(k) for k in ("step", "module", "missing", "unexpected", "total", "loaded",
                                   "strict", "examples_missing")
        })

    def _on_lossfn(self, ev: dict) -> None:
        self._see_step(ev)
        lf = {k: v for k, v in ev.items() if k not in ("v", "type", "t", "rank", "world_size")}
        self.lossfn = lf
        self._append_bounded(self.lossfns, lf)

    def _on_probe(self, ev: dict) -> None:
        name = str(ev.get("name"))
        if name == "class_names":
            self._framework_class_names(ev.get("class_names"), ev.get("source"))
        if name == "dataset_facts" and isinstance(ev.get("reduce_zero_label"), bool):
            self.framework_reduce_zero_label = ev["reduce_zero_label"]
        if ev.get("status") == "disabled" and name not in self.probes_disabled:
            self.probes_disabled.append(name)
        self.probe_notes.append({k: ev.get(k) for k in ("name", "status", "error", "message", "rank")})

    def _on_overhead(self, ev: dict) -> None:
        if (ev.get("rank") or 0) == self.lead_rank:
            self._see_step(ev)
            self.overhead = {k: ev.get(k) for k in ("step", "share", "budget", "intervals", "dropped")}
            s = _int(ev.get("step")) or self.step
            self._read("overhead", self.overhead, s, "overhead")
            self._note_gap("overhead", s)
        d = _int(ev.get("dropped"))
        if d is not None and d > self.counters["dropped"]:
            self.counters["dropped"] = d

    def _on_script_metric(self, ev: dict) -> None:
        s = _int(ev.get("step"))
        if s is None:
            s = self.step
        else:
            self._see_step(ev)
        v = as_float(ev.get("value"))
        if ev.get("name", "miou") == "miou" and v is not None:
            self._append_bounded(self.script_metrics, (s, v))
        self._append_bounded(self.script_metric_events, {
            "step": s, "name": ev.get("name"), "value": v, "line": ev.get("line"), "source": ev.get("source"),
        })

    def _on_bye(self, ev: dict) -> None:
        if (ev.get("rank") or 0) == self.lead_rank:
            self._see_step(ev)
            self.bye = {k: ev.get(k) for k in ("step", "dropped", "events", "share", "disabled", "reason")}
        d = _int(ev.get("dropped"))
        if d is not None and d > self.counters["dropped"]:
            self.counters["dropped"] = d
        for name in ev.get("disabled") or ():
            if str(name) not in self.probes_disabled:
                self.probes_disabled.append(str(name))

    def _on_output(self, ev: dict) -> None:
        self.output.append((ev.get("stream"), ev.get("line")))
        self.loop.on_output(ev.get("line"))

    def _on_status(self, ev: dict) -> None:
        st = ev.get("status")
        if isinstance(st, str):
            self.status = st
        if "exit_code" in ev and ev.get("exit_code") is not None:
            self.exit_code = _int(ev.get("exit_code"))
        if ev.get("signal") is not None:
            self.signal = _int(ev.get("signal"))
        if ev.get("pid") is not None:
            self.pid = _int(ev.get("pid"))
        t = as_float(ev.get("t")) if ev.get("t") is not None else None
        if st in ("starting", "running") and self.started is None:
            self.started = t
        if st in ("finished", "killed", "failed", "lost"):
            self.ended = t

    def _on_action(self, ev: dict) -> None:
        self._append_bounded(self.actions, {
            "kind": ev.get("kind"), "finding": ev.get("finding"), "step": ev.get("step"),
            "by": ev.get("by"), "t": ev.get("t"),
        })
        if ev.get("kind") == "pause":
            self.status = "paused"
        elif ev.get("kind") == "resume" and self.status == "paused":
            self.status = "running"

    def _on_proc(self, ev: dict) -> None:
        self.proc = {k: ev.get(k) for k in ("cpu", "rss", "procs", "gpu_mem", "t")}

    def _on_gpu(self, ev: dict) -> None:
        devices = ev.get("devices")
        if isinstance(devices, list):
            self.gpu = {"devices": [d for d in devices if isinstance(d, dict)], "t": ev.get("t"),
                        "step": _int(ev.get("step"))}

    def _note_loader_facts(self, ev: dict) -> None:
        for k in ("num_workers", "pin_memory"):
            if ev.get(k) is not None:
                self.loader_facts[k] = ev.get(k)

    def _read_gpu_side(self, ev: dict, s: int) -> None:
        """``step.cuda_mem`` and ``step.data_wait`` / ``step.wall`` (shim contract, issue 19)."""
        mem = ev.get("cuda_mem")
        if isinstance(mem, dict):
            alloc = _int(mem.get("allocated"))
            if alloc is not None:
                self.cuda_allocated.append(s, alloc)
                self._read("cuda_mem", mem, s, "readback")
            peak = _int(mem.get("max_allocated"))
            if peak is not None and (self.cuda_peak is None or peak > self.cuda_peak):
                self.cuda_peak = peak
        try:
            wait, wall = as_float(ev.get("data_wait")), as_float(ev.get("wall"))
        except Exception:
            wait = wall = None
        if wait is not None and wall is not None and wall > 0 and wait >= 0:
            self._data_wait.append((wait, wall))
            total = sum(w for _, w in self._data_wait)
            self.data_wait_share = sum(d for d, _ in self._data_wait) / total if total > 0 else None
            self._read("data_wait", self.data_wait_share, s, "readback")

    @property
    def images_per_sec(self) -> float | None:
        """Training throughput: the last batch's size x steps per second (None when unknown)."""
        if not self.steps_per_sec or not self.last_inputs:
            return None
        first = self.last_inputs[0] if isinstance(self.last_inputs[0], dict) else {}
        shape = first.get("shape")
        n = _int(shape[0]) if isinstance(shape, list) and shape else None
        return n * self.steps_per_sec if n else None

    def _on_finding(self, ev: dict) -> None:
        self.counters["mirrored_findings"] += 1

    def _on_other_rank(self, ev: dict) -> None:
        """Events of ranks > 0: the world size, and their label / validation-pass counts merged
        into the run's histograms. Series and findings stay rank 0's (per-rank series are in
        ``rank_loss`` / ``rank_grad_norm``); the dist.* rules keep their own state."""
        ws = _int(ev.get("world_size"))
        if ws and ws > self.world_size:
            self.world_size = ws
        if ev.get("type") == "batch":
            labels = ev.get("labels")
            if not isinstance(labels, dict):
                return
            phase = ev.get("phase")
            if phase in self.batches:
                self.batches[phase] += 1
            self._add_label_counts(phase, labels, lead=False, image_shape=ev.get("image_shape"))

    # ------------------------------------------------------------------ distributed
    def _on_rank_event(self, ev: dict) -> None:
        """Per-rank bookkeeping for every shim event of a distributed run (any rank)."""
        r = _int(ev.get("rank")) or 0
        ws = _int(ev.get("world_size")) or 1
        if ws > self.world_size:
            self.world_size = ws
        if r not in self.rank_step:
            self.rank_step[r] = 0
            self.ranks = sorted(self.rank_step)
        s = _int(ev.get("step"))
        if s is not None and s > self.rank_step[r]:
            self.rank_step[r] = s
        t = ev.get("t")
        if isinstance(t, (int, float)) and not isinstance(t, bool):
            self.rank_last_t[r] = float(t)
        typ = ev.get("type")
        if typ == "hello":
            lr, lws = _int(ev.get("local_rank")), _int(ev.get("local_world_size"))
            if lr is not None and 0 <= lr <= r and not self.rank_bye:
                self.lead_rank = r - lr
            if lws and lws > 0:
                self.local_world_size = lws
        elif typ == "step":
            s = s if s is not None else self.rank_step[r]
            try:
                loss = as_float(ev.get("loss"))
            except Exception:
                loss = None
            self.rank_loss.setdefault(r, Series(self.history, f"loss[{r}]")).append(s, loss)
            try:
                gn = as_float(ev.get("grad_norm"))
            except Exception:
                gn = None
            if gn is not None:
                self.rank_grad_norm.setdefault(r, Series(self.history, f"grad_norm[{r}]")).append(s, gn)
            nf = _int(ev.get("loss_nonfinite_total"))
            if nf is not None:
                self.rank_loss_nonfinite[r] = max(nf, self.rank_loss_nonfinite.get(r, 0))
        elif typ == "preds":
            h = _hist(ev.get("hist"))
            if h is not None:
                self.rank_pred_hist[r] = h
        elif typ == "bye":
            self.rank_bye[r] = {k: ev.get(k) for k in ("step", "reason", "loss_nonfinite_total")}

    @property
    def expected_ranks(self) -> int:
        """How many ranks report to this supervisor: the world size, or on one node of a
        multi-node run its local world size."""
        ws = max(int(self.world_size or 1), 1)
        lws = self.local_world_size
        return lws if lws and lws < ws else ws

    @property
    def pred_hist_merged(self) -> np.ndarray:
        """The last training/eval preds sample of every rank, summed (rank 0's alone when
        the run is not distributed)."""
        if not self.rank_pred_hist:
            return self.pred_hist
        n = max(len(h) for h in self.rank_pred_hist.values())
        out = np.zeros(n, dtype=np.int64)
        for h in self.rank_pred_hist.values():
            out[: len(h)] += h
        return out

    def _stash_eval(self, ev: dict) -> list[dict]:
        """Keep one rank's evaluation pass; the merged event once every rank sent it."""
        idx = _int(ev.get("index"))
        if idx is None:
            idx = -1
        part = self._eval_parts.setdefault(idx, {"events": {}, "step": 0})
        part["events"][_int(ev.get("rank")) or 0] = ev
        part["step"] = max(part["step"], _int(ev.get("step")) or 0)
        if len(part["events"]) >= self.expected_ranks:
            del self._eval_parts[idx]
            return [self._merge_eval(part["events"])]
        return []

    def _flush_evals(self, ev: dict) -> list[dict]:
        """Evaluations that not every rank will send (e.g. ``if rank == 0: evaluate()``): merged
        from the ranks that did, once training went >= 2 steps past them (under DDP no rank
        can be more than one step ahead of another), when every rank said bye, or at the end."""
        typ = ev.get("type")
        ready = []
        if typ == "status":
            if ev.get("status") not in ("finished", "killed", "failed", "lost"):
                return []
            ready = list(self._eval_parts)
        elif typ == "bye":
            if len(self.rank_bye) >= self.expected_ranks:
                ready = list(self._eval_parts)
        else:
            s = _int(ev.get("step"))
            if s is None:
                return []
            ready = [i for i, p in self._eval_parts.items() if s >= p["step"] + 2]
        out = []
        for i in sorted(ready, key=lambda k: self._eval_parts[k]["step"]):
            out.append(self._merge_eval(self._eval_parts.pop(i)["events"]))
        return out

    def _merge_eval(self, parts: dict[int, dict]) -> dict:
        """One eval event from the ranks' passes: matrices and pixel counts summed."""
        ranks = sorted(parts)
        base = dict(parts[ranks[0]])
        mats = {}
        for r in ranks:
            m = parts[r].get("matrix")
            if isinstance(m, list) and m:
                a = np.asarray(m, dtype=np.int64)
                if a.ndim == 2 and a.shape[0] == a.shape[1]:
                    mats[r] = a
        if mats:
            n = max(a.shape[0] for a in mats.values())
            tot = np.zeros((n, n), dtype=np.int64)
            for a in mats.values():
                tot[: a.shape[0], : a.shape[1]] += a
            base["matrix"] = tot.tolist()
        self.rank_confusion = mats
        for k in ("batches", "expected", "pixels", "oor", "size_mismatch", "paired", "pred_oor", "ignored",
                  "fractional"):
            vals = [parts[r].get(k) for r in ranks]
            nums = [_int(v) for v in vals if _int(v) is not None]
            if nums:
                base[k] = sum(nums)
        base["aborted"] = any(bool(parts[r].get("aborted")) for r in ranks)
        for r in ranks:
            if parts[r].get("exception"):
                base["exception"] = parts[r]["exception"]
                break
        base["step"] = max(_int(parts[r].get("step")) or 0 for r in ranks)
        base["rank"] = self.lead_rank
        base["ranks"] = ranks
        base["merged"] = True
        return base

    # ------------------------------------------------------------------ views
    @property
    def checklist(self) -> list:
        from .checklist import build_checklist

        return build_checklist(self)

    def finding_list(self) -> list[Finding]:
        return list(self.findings.values())

    def report(self, exit_code: int | None = None) -> dict:
        from .report import build_report

        return build_report(self, exit_code=exit_code)
