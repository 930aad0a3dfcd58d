"""What every adapter shares: reaching the running shim, feeding it, never failing.

Every function here is a cheap no-op when the process does not run under the segwatch shim
(``segwatch run`` / ``python -m segwatch.shim``), and none of them ever raises into the
caller: adapters run inside the user's training, which must not break because of us.

The adapters feed the shim through the public API (``segwatch.watch``, ``segwatch.log_eval``,
``segwatch.end_eval``, ``segwatch.log_metric``).  Three things the public API does not offer
yet are done here through the shim object, read-only or through its own emitter, and each is
isolated in one function so that it can move to a public call later:

* ``emit_metric(..., source=...)``: a ``script_metric`` event with a ``source`` other than
  ``"adapter"`` (``"metrics_class"``) and extra evidence fields;
* ``auto_pairing_ok()``: whether the shim's own evaluation pass already pairs the model's
  logits with the labels (then an adapter must not replace that independent matrix with the
  script's own pairs);
* ``eval_open()`` / ``eval_explicit()``: whether an evaluation pass is open.
"""
from __future__ import annotations

import math
import sys
from typing import Any

__all__ = ["shim", "active", "watch", "log_eval", "end_eval", "log_metric", "emit_metric",
           "auto_pairing_ok", "eval_open", "eval_explicit", "safe", "to_percent", "find_miou", "report_framework_miou",
           "resize_logits_to", "shim_step", "note", "report_class_names", "should_feed", "logits_and_labels", "pick"]


def shim():
    """The installed shim object, or None."""
    try:
        mod = sys.modules.get("segwatch.shim.runtime")
        if mod is None:
            return None
        s = mod.current()
        return s if s is not None and getattr(s, "installed", False) and not getattr(s, "finished", False) else None
    except Exception:
        return None


def active() -> bool:
    return shim() is not None


def safe(fn):
    """Decorator: run ``fn`` only under the shim, swallow every error (reported once)."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        s = shim()
        if s is None:
            return None
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # never break training
            _fail(s, f"adapter:{fn.__module__.rsplit('.', 1)[-1]}.{fn.__name__}", exc)
            return None
    return wrapper


_failed: set[str] = set()


def _fail(s, name: str, exc: BaseException) -> None:
    if name in _failed:
        return
    _failed.add(name)
    try:
        s._fail(name, exc)
    except Exception:
        pass


def note(message: str, name: str = "adapter") -> None:
    s = shim()
    if s is not None:
        try:
            s.note(message, name)
        except Exception:
            pass


_names_sent: set[str] = set()


def report_class_names(names, source: str) -> bool:
    """Tell segwatch the class names the framework knows (a ``probe`` note named
    ``class_names``); core uses them when the config names no classes. Once per source."""
    s = shim()
    if s is None or source in _names_sent:
        return False
    try:
        if isinstance(names, dict):   # HF id2label: {0: "wall", ...} (keys may be strings)
            items = sorted((int(k), str(v)) for k, v in names.items())
            if [k for k, _ in items] != list(range(len(items))):
                return False
            names = [v for _, v in items]
        names = [str(n) for n in names or ()]
        if not names or len(names) > 4096:
            return False
        # HF's default id2label ("LABEL_0", ...) names nothing
        if all(n == f"LABEL_{i}" for i, n in enumerate(names)):
            return False
        _names_sent.add(source)
        s._emit("probe", name="class_names", status="note", class_names=names, source=source,
                step=int(getattr(s, "step", 0) or 0))
        return True
    except Exception as exc:
        _fail(s, "adapter:class_names", exc)
        return False


def shim_step() -> int | None:
    s = shim()
    return int(getattr(s, "step", 0)) if s is not None else None


def watch(model, num_classes=None, ignore_index=None) -> None:
    if shim() is None:
        return
    try:
        import segwatch
        segwatch.watch(model, num_classes=num_classes, ignore_index=ignore_index)
    except Exception:
        pass


def resize_logits_to(logits, labels):
    """Bilinear-upsample 4-D logits to the labels' spatial size (what the loss/metric does)."""
    import torch
    import torch.nn.functional as F

    if not isinstance(logits, torch.Tensor) or not isinstance(labels, torch.Tensor):
        return logits
    if logits.dim() != 4 or not logits.is_floating_point():
        return logits
    lab_hw = tuple(labels.shape[-2:])
    if tuple(logits.shape[-2:]) == lab_hw:
        return logits
    with torch.no_grad():
        return F.interpolate(logits.detach().float(), size=lab_hw, mode="bilinear", align_corners=False)


def log_eval(logits, labels, resize: bool = True) -> None:
    """One evaluation batch; logits are resized to the labels first (unless ``resize=False``)."""
    if shim() is None:
        return
    try:
        import segwatch
        import torch

        if isinstance(labels, torch.Tensor) and labels.dim() == 4 and labels.shape[1] == 1:
            labels = labels[:, 0]
        if resize:
            logits = resize_logits_to(logits, labels)
        if isinstance(logits, torch.Tensor):
            logits = logits.detach()
        if isinstance(labels, torch.Tensor):
            labels = labels.detach()
        segwatch.log_eval(logits, labels)
    except Exception as exc:
        s = shim()
        if s is not None:
            _fail(s, "adapter:log_eval", exc)


def end_eval() -> None:
    if shim() is None:
        return
    try:
        import segwatch
        segwatch.end_eval()
    except Exception:
        pass


def mark_sanity() -> None:
    """The open evaluation pass is a framework's sanity check (a few batches before training):
    its ``eval`` event says so, and core keeps it out of the mIoU history."""
    s = shim()
    ev = getattr(s, "_eval", None) if s is not None else None
    if ev is not None:
        ev.sanity = True


def eval_open() -> bool:
    s = shim()
    return s is not None and getattr(s, "_eval", None) is not None


def eval_explicit() -> bool:
    s = shim()
    ev = getattr(s, "_eval", None) if s is not None else None
    return bool(ev is not None and getattr(ev, "explicit", False))


class _PassLoader:
    """Stands in for the DataLoader of an evaluation pass the adapter took over: same id
    (``num``) and length, but never the loader itself, so that the loader running dry (one
    batch early, under a look-ahead fetcher such as accelerate's) does not end the pass."""
    __slots__ = ("num", "length", "index", "passes", "had_backward", "nobackward", "ref")

    def __init__(self, ls) -> None:
        self.num = getattr(ls, "num", None)
        self.length = getattr(ls, "length", None)
        self.index = getattr(ls, "index", 0)
        self.passes = getattr(ls, "passes", 0)
        self.had_backward = False
        self.nobackward = 0
        self.ref = None


def detach_pass_from_loader() -> bool:
    """Let the adapter end the open explicit evaluation pass (``end_eval``) rather than the
    loader's exhaustion.  Stand-in for a public ``segwatch.begin_eval()`` (docs/ADAPTERS.md)."""
    s = shim()
    ev = getattr(s, "_eval", None) if s is not None else None
    if ev is None or not getattr(ev, "explicit", False):
        return False
    ls = getattr(ev, "loader", None)
    if ls is None or isinstance(ls, _PassLoader):
        return False
    try:
        ev.loader = _PassLoader(ls)
        return True
    except Exception:
        return False


def auto_pairing_ok() -> bool:
    """True when the open evaluation pass was paired by the shim itself (model logits with the
    batch labels, same size) at least once: the shim's matrix is independent of the script."""
    s = shim()
    ev = getattr(s, "_eval", None) if s is not None else None
    if ev is None or getattr(ev, "explicit", False):
        return False
    cm = getattr(ev, "cm", None)
    if cm is None:
        return False
    try:
        return int(getattr(cm, "updates", 0)) - int(getattr(cm, "size_mismatch", 0)) > 0
    except Exception:
        return False


def should_feed() -> bool:
    """Feed an evaluation batch explicitly (``log_eval``) only where the shim does not pair
    the model's logits with the labels by itself: no pass open, an explicit pass already, or
    a pass whose automatic pairs all failed (size mismatch: sliding window, 1/4-size logits).
    Where the shim pairs by itself, its matrix stays independent of the script's outputs."""
    if not active():
        return False
    if not eval_open() or eval_explicit():
        return True
    return not auto_pairing_ok()


_LOGIT_KEYS = ("logits", "seg_logits", "preds", "pred", "predictions", "y_hat", "out", "outputs", "output")
_LABEL_KEYS = ("labels", "label", "target", "targets", "gt", "gt_semantic_seg", "masks", "mask", "y",
               "segmentation", "seg")


def pick(d, keys):
    """The first tensor-like value of ``d`` under one of ``keys`` (dicts and attributes)."""
    for k in keys:
        v = None
        if isinstance(d, dict):
            v = d.get(k)
        elif d is not None and not isinstance(d, (list, tuple)):
            v = getattr(d, k, None)
        if v is not None and hasattr(v, "shape"):
            return v
    return None


def logits_and_labels(outputs, batch=None):
    """(logits, labels) from a step's outputs (a dict/ModelOutput with logits and labels, or a
    logits tensor) and, for the labels, the batch (``label``-like key or the integer map)."""
    import torch

    logits = outputs if isinstance(outputs, torch.Tensor) else pick(outputs, _LOGIT_KEYS)
    labels = None if isinstance(outputs, torch.Tensor) else pick(outputs, _LABEL_KEYS)
    if labels is None and batch is not None:
        labels = pick(batch, _LABEL_KEYS)
        if labels is None:
            try:
                from segwatch.shim import stats as S
                found = S.classify_batch(batch)[1]
                labels = found[1] if found is not None else None
            except Exception:
                labels = None
    if not isinstance(logits, torch.Tensor) or not isinstance(labels, torch.Tensor):
        return None, None
    if logits.dim() not in (3, 4) or labels.dim() not in (3, 4) or logits.shape[0] != labels.shape[0]:
        return None, None
    if logits.dim() == 4 and not logits.is_floating_point():
        return None, None
    return logits, labels


def log_metric(name: str, value, step=None) -> None:
    if shim() is None:
        return
    try:
        import segwatch
        segwatch.log_metric(name, float(value), step=step)
    except Exception:
        pass


def emit_metric(name: str, value, source: str = "adapter", step=None, line=None, **extra: Any) -> None:
    """A ``script_metric`` event with an explicit ``source`` and extra evidence fields.

    Falls back to ``segwatch.log_metric`` (source ``adapter``) when the shim object does not
    expose its emitter."""
    s = shim()
    if s is None:
        return
    try:
        v = float(value)
        emit = getattr(s, "_emit", None)
        if emit is None:
            log_metric(name, v, step=step)
            return
        fields = {k: val for k, val in extra.items() if val is not None}
        emit("script_metric", name=str(name), value=v if math.isfinite(v) else str(v).lower(),
             step=int(s.step if step is None else step), line=line, source=source, **fields)
    except Exception as exc:
        _fail(s, "adapter:metric", exc)


def to_percent(v: float, fraction: bool | None = None) -> float:
    """A metric value in percent.  ``fraction=None``: values in [0, 1] are taken as fractions."""
    v = float(v)
    if fraction is None:
        fraction = 0.0 <= v <= 1.0
    return v * 100.0 if fraction else v


_MIOU_KEYS = ("miou", "mean_iou", "meaniou", "m_iou", "jaccard", "iou")


def _as_float(v) -> float | None:
    try:
        if hasattr(v, "detach"):
            if v.numel() != 1:
                return None
            v = v.detach().float().cpu().item()
        f = float(v)
        return f
    except Exception:
        return None


def report_framework_miou(metrics, metric_key: str | None, fraction: bool | None, framework: str) -> None:
    """Emit the mIoU a framework logged (``metric_key`` if given and numeric, else the first
    mIoU-like entry of ``metrics``) as a ``script_metric`` in percent."""
    metrics = dict(metrics or {})
    found = None
    if metric_key and metric_key in metrics:
        v = _as_float(metrics[metric_key])
        found = (metric_key, v) if v is not None else None
    if found is None:
        found = find_miou(metrics)
    if found is None:
        return
    key, raw = found
    emit_metric("miou", to_percent(raw, fraction), source="adapter", key=str(key), raw=raw,
                framework=framework, line=f"{key}={raw:.6g}")


def find_miou(metrics: dict) -> tuple[str, float] | None:
    """The (key, value) of an mIoU-like entry in a metrics dict: ``val/miou``, ``eval_mean_iou``,
    ``mIoU``, ``val_jaccard``...  Per-class entries (``iou_3``, ``IoU.wall``) are skipped."""
    if not isinstance(metrics, dict):
        return None
    best = None
    for k, v in metrics.items():
        key = str(k).lower().replace("-", "_").replace("/", "_").replace(".", "_")
        leaf = key.split("_", 1)[1] if key.startswith(("val_", "eval_", "valid_", "validation_", "test_")) else key
        rank = None
        for i, cand in enumerate(_MIOU_KEYS):
            if leaf == cand or leaf.endswith("_" + cand) or leaf.startswith(cand + "_epoch"):
                rank = i
                break
        if rank is None or rank >= len(_MIOU_KEYS) - 1 and leaf != "iou":
            continue
        f = _as_float(v)
        if f is None or not math.isfinite(f):
            continue
        if best is None or rank < best[0]:
            best = (rank, str(k), f)
    return (best[1], best[2]) if best else None
