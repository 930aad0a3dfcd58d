"""Label rules (guide section 4): out-of-range values, the ignore value, empty batches,
sizes, interpolation, misalignment and class imbalance. Inputs: ``batch.labels`` stats."""
from __future__ import annotations

from collections import deque

import numpy as np

from .base import Rule, ffloat, finite, fint, r4

#: label.interpolated: a bilinear-resized integer map leaves an in-between value on almost
#: every border pixel between classes whose ids differ by >= 2, i.e. a few % of all pixels
#: for indoor scenes; an untouched (or nearest-resized) map only has such a pixel where a
#: one-pixel-wide region of a third class happens to sit between two others, well below
#: 0.1 %. One batch at >= 2 %, or a running mean >= 0.5 % over >= 3 batches, is interpolation.
BOUNDARY_ONE = 0.02
BOUNDARY_MEAN = 0.005
BOUNDARY_BATCHES = 3
#: label.class_imbalance
IMBALANCE_SHARE = 0.90
IMBALANCE_BATCHES = 5
#: label.misaligned
ALIGN_WINDOW = 8
ALIGN_MIN = 5
ALIGN_MARGIN = 0.05


def split_oor(state, labels: dict) -> tuple[tuple[int, int] | None, dict[int, int]]:
    """Split a batch's ``oor`` into (the data's ignore-like value and its count, the rest)."""
    oor = labels.get("oor")
    if not isinstance(oor, dict) or not oor:
        return None, {}
    vals: dict[int, int] = {}
    for k, c in oor.items():
        v, n = fint(k), fint(c)
        if v is not None and n:
            vals[v] = n
    ig = state.inferred_ignore
    data_ignore = None
    if ig is not None and ig in vals:
        data_ignore = (ig, vals.pop(ig))
    return data_ignore, vals


def _spatial(shape) -> list[int] | None:
    if not isinstance(shape, (list, tuple)) or len(shape) < 2:
        return None
    try:
        return [int(shape[-2]), int(shape[-1])]
    except (TypeError, ValueError):
        return None


class LabelOutOfRange(Rule):
    id = "label.out_of_range"
    events = ("batch",)

    def check(self, state, ev):
        labels = ev.get("labels")
        if not isinstance(labels, dict):
            return None
        data_ignore, rest = split_oor(state, labels)
        if state.ignore_index is None and data_ignore is not None:
            rest[data_ignore[0]] = data_ignore[1]  # no ignore value configured: all are errors
        if not rest:
            return None
        C = state.num_classes
        total = fint(labels.get("total")) or 0
        n = sum(rest.values())
        top = sorted(rest.items(), key=lambda kv: (-kv[1], kv[0]))[:8]
        return self.make(state, ev, {
            "values": {str(v): c for v, c in top}, "pixels": n,
            "share": r4(n / total) if total else None, "num_classes": C,
            "valid_range": f"0..{C - 1}" if C else None,
            "ignore_index": state.ignore_index, "label_min": labels.get("min"),
            "label_max": labels.get("max"), "key": labels.get("key"),
        })


class LabelIgnoreMismatch(Rule):
    id = "label.ignore_mismatch"
    events = ("batch",)

    def check(self, state, ev):
        if state.ignore_is_auto or state.ignore_index is None:
            return None  # auto adopts it; null means every out-of-range value is an error
        labels = ev.get("labels")
        if not isinstance(labels, dict):
            return None
        data_ignore, _ = split_oor(state, labels)
        if data_ignore is None:
            return None
        v, n = data_ignore
        total = fint(labels.get("total")) or 0
        return self.make(state, ev, {
            "data_value": v, "configured": state.ignore_index, "pixels": n,
            "share": r4(n / total) if total else None,
            "suggest": f"ignore_index: {v} (or auto)",
        })


class LabelAllIgnored(Rule):
    id = "label.all_ignored"
    events = ("batch",)

    def check(self, state, ev):
        labels = ev.get("labels")
        if not isinstance(labels, dict):
            return None
        total = fint(labels.get("total")) or 0
        if total <= 0:
            return None
        ignored = fint(labels.get("ignore")) or 0
        data_ignore, _ = split_oor(state, labels)
        if data_ignore is not None:
            ignored += data_ignore[1]
        if ignored < total:
            return None
        return self.make(state, ev, {
            "pixels": total, "ignored": ignored,
            "ignore_value": labels.get("ignore_value") if labels.get("ignore_value") is not None
            else (data_ignore[0] if data_ignore else state.ignore_index),
            "batch_index": ev.get("index"), "key": labels.get("key"),
        })


class LabelShapeMismatch(Rule):
    id = "label.shape_mismatch"
    events = ("batch", "eval")

    def check(self, state, ev):
        if ev["type"] == "eval":
            sm = fint(ev.get("size_mismatch")) or 0
            if sm <= 0:
                return None
            return self.make(state, ev, {
                "source": "evaluation", "size_mismatch_batches": sm,
                "batches": ev.get("batches"), "eval_index": fint(ev.get("index")),
            }, phase="val")
        labels = ev.get("labels")
        if not isinstance(labels, dict):
            return None
        ls = _spatial(labels.get("shape"))
        im = _spatial(ev.get("image_shape"))
        if ls is None or im is None or ls == im:
            return None
        return self.make(state, ev, {
            "source": "batch", "label_size": ls, "image_size": im, "key": labels.get("key"),
        })


class LabelInterpolated(Rule):
    id = "label.interpolated"
    events = ("batch",)

    def __init__(self) -> None:
        self._n = 0
        self._sum = 0.0

    def check(self, state, ev):
        labels = ev.get("labels")
        if not isinstance(labels, dict):
            return None
        frac = fint(labels.get("fractional")) or 0
        b = ffloat(labels.get("boundary"))
        if finite(b):
            self._n += 1
            self._sum += b
        mean = self._sum / self._n if self._n else None
        why = None
        if frac > 0:
            why = "non-integer label values"
        elif finite(b) and b >= BOUNDARY_ONE:
            why = "in-between values on class borders in this batch"
        elif self._n >= BOUNDARY_BATCHES and mean is not None and mean >= BOUNDARY_MEAN:
            why = "in-between values on class borders across batches"
        if why is None:
            return None
        return self.make(state, ev, {
            "why": why, "fractional": frac, "boundary_share": r4(b) if finite(b) else None,
            "boundary_mean": r4(mean), "batches": self._n, "dtype": labels.get("dtype"),
            "threshold": {"one_batch": BOUNDARY_ONE, "mean": BOUNDARY_MEAN},
        })


class LabelMisaligned(Rule):
    """Two signals, both relative so that the absolute scale of ``align`` does not matter:

    * flipped: over the last ``ALIGN_WINDOW`` training batches (>= ``ALIGN_MIN``), at
      least 80 % score better with the label mirrored (``align_flipped > align + 0.05``):
      the image was flipped without its label. Error when it is better by 2x on median.
    * train vs val: training batches align far worse (< 0.6x) than validation batches
      (which are not augmented): some augmentation moves the image alone.
    Healthy joint flips keep ``align`` high and ``align_flipped`` low, so both stay quiet.
    """
    id = "label.misaligned"
    events = ("batch",)

    def __init__(self) -> None:
        self._train: deque = deque(maxlen=ALIGN_WINDOW)
        self._val_n = 0
        self._val_sum = 0.0

    def check(self, state, ev):
        a = ffloat(ev.get("align"))
        if not finite(a):
            return None
        af = ffloat(ev.get("align_flipped"))
        if ev.get("phase") == "val":
            self._val_n += 1
            self._val_sum += a
            return None
        self._train.append((a, af if finite(af) else None))
        if len(self._train) < ALIGN_MIN:
            return None
        pairs = [(x, y) for x, y in self._train if y is not None]
        if len(pairs) >= ALIGN_MIN:
            better = sum(1 for x, y in pairs if y > x + ALIGN_MARGIN)
            if better >= 0.8 * len(pairs):
                ratios = sorted(y / max(x, 1e-6) for x, y in pairs)
                med = ratios[len(ratios) // 2]
                return self.make(state, ev, {
                    "why": "labels match the images better when mirrored",
                    "batches": len(pairs), "flipped_better": better,
                    "align": r4(float(np.mean([x for x, _ in pairs]))),
                    "align_flipped": r4(float(np.mean([y for _, y in pairs]))),
                    "median_ratio": r4(med),
                }, severity="error" if med >= 2.0 else "warning")
        if self._val_n >= 3 and len(self._train) >= ALIGN_WINDOW:
            val = self._val_sum / self._val_n
            tr = float(np.mean([x for x, _ in self._train]))
            if val >= 0.1 and tr < 0.6 * val:
                return self.make(state, ev, {
                    "why": "training batches align far worse than validation batches",
                    "align_train": r4(tr), "align_val": r4(val), "batches": len(self._train),
                })
        return None


class LabelClassImbalance(Rule):
    id = "label.class_imbalance"
    events = ("batch",)

    def __init__(self) -> None:
        self._n = 0

    def check(self, state, ev):
        if ev.get("phase") != "train" or not isinstance(ev.get("labels"), dict):
            return None
        self._n += 1
        h = state.label_hist
        if self._n < IMBALANCE_BATCHES or h.size == 0:
            return None
        tot = int(h.sum())
        if tot <= 0:
            return None
        c = int(h.argmax())
        share = float(h[c]) / tot
        if share < IMBALANCE_SHARE:
            return None
        return self.make(state, ev, {
            "class": c, "class_name": state.class_name(c), "share": r4(share),
            "batches": self._n, "labelled_pixels": tot,
        })
