"""Label rules (guide section 4): out-of-range values, the ignore value, empty batches,
sizes, interpolation, misalignment and class imbalance. Inputs: ``batch.labels`` stats."""
from __future__ import annotations

from collections import deque

import numpy as np

from .base import Rule, ffloat, finite, fint, r4
from .lossfn import LossAware

#: label.interpolated. ``boundary`` is the share of label pixels holding a value strictly
#: between their left and right neighbours. Bilinear resizing leaves about one such pixel
#: at every horizontal class transition whose ids differ by >= 2, i.e. a few per image
#: row whatever the resolution; an untouched or nearest-resized map only has one where a
#: one-pixel-wide strip of a third class sits between two others (a small fraction of a
#: pixel per row). So the share is scaled to "in-between pixels per row" (x label width):
#: one batch >= 1.5 per row, or a running mean >= 0.4 per row over >= 3 batches, is
#: interpolation. (Measured on the fault zoo's 32 px crops: healthy ~0.05/row, nearest
#: downsampling ~0.1/row, bilinear ~1.1/row.) Without a width: 2 % / 1.2 % of pixels.
BOUNDARY_ROW_ONE = 1.5
BOUNDARY_ROW_MEAN = 0.4
BOUNDARY_ONE = 0.02
BOUNDARY_MEAN = 0.012
BOUNDARY_BATCHES = 3
#: label.class_imbalance
IMBALANCE_SHARE = 0.90
IMBALANCE_BATCHES = 5
#: label.misaligned (``align`` is ~0.5 for unrelated edges and rises towards 1 when label
#: borders sit on image edges; see segwatch/shim/stats.py). A batch "prefers the mirror"
#: when align_flipped > align + ALIGN_MARGIN; healthy data (also with joint flips) almost
#: never does, because mirrored labels only keep the mirror-symmetric borders.
ALIGN_MARGIN = 0.02
ALIGN_ALL_MIN = 5          # A: >= 80 % of >= 5 recent batches prefer the mirror: error
ALIGN_WINDOW = 16          # B: >= 30 % of the last 16 (>= 8) prefer it (vs val baseline)
ALIGN_PART_MIN = 8
ALIGN_PART_SHARE = 0.3


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


class LabelOutOfRange(LossAware, Rule):
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


class LabelIgnoreMismatch(LossAware, Rule):
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


class LabelAllIgnored(LossAware, Rule):
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


def rescaled_eval_inputs(state) -> bool:
    """The evaluation pass just ended paired no prediction of its labels' size although the
    loader's labels have their images' size: the script runs the model on rescaled or
    cropped images (BiSeNet's multi-scale + flip and sliding-window passes, mmseg 'slide')
    and resizes or stitches the outputs itself. Not a label problem, and not an empty
    matrix in the script: segwatch could not observe that pass."""
    e = state.latest_eval() or {}
    return (fint(e.get("label_size_fit")) or 0) > 0 and not fint(e.get("label_size_differs"))


class LabelShapeMismatch(Rule):
    id = "label.shape_mismatch"
    events = ("batch", "eval")

    def check(self, state, ev):
        if ev["type"] == "eval":
            sm = fint(ev.get("size_mismatch")) or 0
            if sm <= 0 or rescaled_eval_inputs(state):
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
        self._sum = 0.0       # per-row values (or shares when no width is known)
        self._per_row = True

    def check(self, state, ev):
        labels = ev.get("labels")
        if not isinstance(labels, dict):
            return None
        frac = fint(labels.get("fractional")) or 0
        b = ffloat(labels.get("boundary"))
        shape = labels.get("shape")
        width = fint(shape[-1]) if isinstance(shape, (list, tuple)) and shape else None
        row = None
        if finite(b):
            if width and width >= 3 and self._per_row:
                row = b * width
                self._sum += row
            else:
                if self._per_row and self._n:   # switch to shares for the whole run
                    self._sum, self._n = 0.0, 0
                self._per_row = False
                self._sum += b
            self._n += 1
        mean = self._sum / self._n if self._n else None
        one, avg = (BOUNDARY_ROW_ONE, BOUNDARY_ROW_MEAN) if self._per_row else (BOUNDARY_ONE, BOUNDARY_MEAN)
        value = row if self._per_row else b
        why = None
        if frac > 0:
            why = "non-integer label values"
        elif finite(value) and value >= one:
            why = "in-between values on class borders in this batch"
        elif self._n >= BOUNDARY_BATCHES and mean is not None and mean >= avg:
            why = "in-between values on class borders across batches"
        if why is None:
            return None
        return self.make(state, ev, {
            "why": why, "fractional": frac, "boundary_share": r4(b) if finite(b) else None,
            "per_row": r4(row) if row is not None else None,
            "mean": r4(mean), "unit": "pixels per row" if self._per_row else "share of pixels",
            "batches": self._n, "dtype": labels.get("dtype"),
            "threshold": {"one_batch": one, "mean": avg},
        })


class LabelMisaligned(Rule):
    """Image and label moved differently by an augmentation. Three signals, all relative:

    * A, every sample flipped alone: >= 80 % of >= 5 recent training batches prefer the
      mirrored label (error).
    * B, a random flip applied to the image only (p = 0.5): a good share (>= 30 %) of the
      last 16 training batches prefer the mirror while validation batches (unaugmented)
      do not (their share + 0.25 stays below; without validation data yet, >= 40 %).
    * C, train vs val: training batches align far worse than validation batches, above
      chance (0.5): excess_train < 0.4 x excess_val, with excess_val >= 0.05.
    A single odd batch never fires; healthy joint flips keep align above align_flipped.
    Like against like: a validation batch is a reference only when its images have a size
    the training batches have and its labels are not much more ignore than theirs (images
    padded to a fixed size score their padding border as a perfect image/label edge).
    """
    id = "label.misaligned"
    events = ("batch",)
    #: a validation batch whose ignore share exceeds training's by more than this is padded
    PAD_IGNORE_MARGIN = 0.05

    def __init__(self) -> None:
        self._train: deque = deque(maxlen=ALIGN_WINDOW)
        self._val_n = 0
        self._val_sum = 0.0
        self._val_pref = 0
        self._val_pairs = 0
        self._train_shapes: set = set()
        self._train_ignore = [0, 0]   # ignore pixels, pixels of training batches
        self._val_skipped = 0
        self._val_pending: deque = deque(maxlen=64)

    @staticmethod
    def _shape(ev) -> tuple | None:
        sh = ev.get("image_shape")
        if isinstance(sh, (list, tuple)) and len(sh) >= 2:
            return tuple(int(x) for x in sh[-2:] if isinstance(x, (int, float)))
        return None

    @staticmethod
    def _ignore_share(ev) -> float | None:
        lab = ev.get("labels")
        if not isinstance(lab, dict):
            return None
        tot, ign = fint(lab.get("total")) or 0, fint(lab.get("ignore")) or 0
        oor = fint(lab.get("oor_total"))
        if oor is None and isinstance(lab.get("oor"), dict):
            oor = sum(fint(v) or 0 for v in lab["oor"].values())
        return (ign + (oor or 0)) / tot if tot > 0 else None

    def _like_training(self, ev) -> bool:
        sh = self._shape(ev)
        if sh is None or sh not in self._train_shapes:
            return False
        vs = self._ignore_share(ev)
        if vs is not None and self._train_ignore[1] > 0:
            ts = self._train_ignore[0] / self._train_ignore[1]
            if vs > ts + self.PAD_IGNORE_MARGIN:
                return False
        return True

    def _add_val(self, ev, a: float, af: float | None) -> None:
        if not self._like_training(ev):
            self._val_skipped += 1
            return
        self._val_n += 1
        self._val_sum += a
        if af is not None:
            self._val_pairs += 1
            self._val_pref += af > a + ALIGN_MARGIN

    def check(self, state, ev):
        a = ffloat(ev.get("align"))
        if ev.get("phase") != "val":
            sh = self._shape(ev)
            if sh is not None and len(self._train_shapes) < 64:
                self._train_shapes.add(sh)
            lab = ev.get("labels")
            if isinstance(lab, dict) and (fint(lab.get("total")) or 0) > 0:
                share = self._ignore_share(ev) or 0.0
                tot = fint(lab.get("total")) or 0
                self._train_ignore[0] += share * tot
                self._train_ignore[1] += tot
        if not finite(a):
            return None
        af = ffloat(ev.get("align_flipped"))
        af = af if finite(af) else None
        if ev.get("phase") == "val":
            if not self._train_shapes:
                # no training batch yet (a sanity evaluation first): judge it once one came
                self._val_pending.append((ev, a, af))
                return None
            self._add_val(ev, a, af)
            return None
        while self._val_pending:
            self._add_val(*self._val_pending.popleft())
        lab = ev.get("labels")
        h = lab.get("hist") if isinstance(lab, dict) else None
        if isinstance(h, list) and sum(1 for c in h if (fint(c) or 0) > 0) < 2:
            return None  # one class (or none) in the labels: no label edge to align with
        self._train.append((a, af))
        pairs = [(x, y) for x, y in self._train if y is not None]
        recent = pairs[-ALIGN_ALL_MIN * 2:]
        if len(recent) >= ALIGN_ALL_MIN:
            pref = sum(1 for x, y in recent if y > x + ALIGN_MARGIN)
            if pref >= 0.8 * len(recent):
                return self.make(state, ev, {
                    "why": "labels match the images better when mirrored (every sample)",
                    "batches": len(recent), "prefer_mirror": pref,
                    "align": r4(float(np.mean([x for x, _ in recent]))),
                    "align_flipped": r4(float(np.mean([y for _, y in recent]))),
                }, severity="error")
        if len(pairs) >= ALIGN_PART_MIN:
            pref = sum(1 for x, y in pairs if y > x + ALIGN_MARGIN)
            share = pref / len(pairs)
            val_share = self._val_pref / self._val_pairs if self._val_pairs >= 3 else None
            enough = share >= ALIGN_PART_SHARE and (
                share >= val_share + 0.25 if val_share is not None else share >= 0.4)
            if enough:
                return self.make(state, ev, {
                    "why": "many training samples match their label better when mirrored: "
                           "the image is flipped without its label",
                    "batches": len(pairs), "prefer_mirror": pref, "share": r4(share),
                    "val_share": r4(val_share) if val_share is not None else None,
                })
        if self._val_n >= 3 and len(self._train) >= ALIGN_PART_MIN:
            ex_val = self._val_sum / self._val_n - 0.5
            ex_tr = float(np.mean([x for x, _ in self._train])) - 0.5
            if ex_val >= 0.05 and ex_tr < 0.4 * ex_val:
                return self.make(state, ev, {
                    "why": "training batches align far worse than validation batches of the same size",
                    "align_train": r4(ex_tr + 0.5), "align_val": r4(ex_val + 0.5),
                    "batches": len(self._train), "val_batches": self._val_n,
                    "val_batches_not_comparable": self._val_skipped,
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


#: label.single_value: the last this many sampled training batches ...
SINGLE_BATCHES = 4
#: ... hold at most this many distinct label values together ...
SINGLE_MAX_VALUES = 2
#: ... while the evaluation labels hold at least this many classes (and 2x + 2 of them)
SINGLE_VAL_MIN = 4


class LabelSingleValue(Rule):
    """Training labels hold one or two values over several batches while the evaluation
    labels hold many: the training labels were scaled (ToTensor's /255 turns class ids
    into 0) or mis-decoded (a palette PNG read as grey). Datasets with few classes never
    fire (their evaluation labels do not hold many), nor does one odd batch."""
    id = "label.single_value"
    events = ("batch",)

    def __init__(self) -> None:
        self._recent: deque = deque(maxlen=SINGLE_BATCHES)   # (step, set of values)

    @staticmethod
    def _values(state, lab: dict) -> set | None:
        h = lab.get("hist")
        if not isinstance(h, list):
            return None
        vals = {i for i, c in enumerate(h) if (fint(c) or 0) > 0}
        ig = state.effective_ignore
        oor = lab.get("oor")
        if isinstance(oor, dict):
            for k, c in oor.items():
                v = fint(k)
                if v is not None and (fint(c) or 0) > 0 and v != ig:
                    vals.add(v)
        frac = fint(lab.get("fractional")) or 0
        if frac > 0:
            vals.add("fractional")
        return vals

    def check(self, state, ev):
        lab = ev.get("labels")
        if ev.get("phase") == "train" and isinstance(lab, dict):
            vals = self._values(state, lab)
            if vals is None:
                return None
            self._recent.append((fint(ev.get("step")) or 0, vals))
        if len(self._recent) < SINGLE_BATCHES:
            return None
        union = set().union(*(v for _, v in self._recent))
        if not union or len(union) > SINGLE_MAX_VALUES:
            return None
        vh = state.val_label_hist
        nval = int(np.count_nonzero(vh)) if vh.size else 0
        if nval < max(SINGLE_VAL_MIN, 2 * len(union) + 2):
            return None
        return self.make(state, ev, {
            "why": "training labels hold only these values while evaluation labels hold many classes",
            "train_values": sorted(union, key=str), "train_batches": len(self._recent),
            "since_step": self._recent[0][0], "val_classes": nval,
        }, severity="error", phase="train", step=self._recent[-1][0])
