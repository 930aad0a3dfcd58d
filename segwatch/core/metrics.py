"""Streaming confusion matrix and the IoU / mIoU conventions segwatch reports.

`ConfusionMatrix` accumulates a C x C matrix (rows = ground truth, columns =
prediction) from torch tensors or numpy arrays.  Torch inputs stay on their device:
counts accumulate into a device int64 tensor and are read back only when `.matrix`
(or another counter) is read.  torch is imported lazily, inside the functions that
receive tensors, so this module imports on a machine without torch.

Nothing is silently corrupted:

* label pixels equal to ``ignore_index`` are skipped and counted in ``ignored``;
* other labels outside ``0..C-1`` (255 with ``ignore_index=-1``, 37 with C=37, ...)
  are never indexed: they are counted in ``oor`` and, by value, in ``oor_values``;
* non-integer values in floating-point label maps are counted in ``fractional``;
* predictions outside ``0..C-1`` (logits with more channels than C, bad class maps)
  are counted in ``pred_oor`` and left out of the matrix;
* a prediction whose spatial size differs from the label's is not resized: the
  whole update is skipped and ``size_mismatch`` is incremented.

Module functions work on a numpy matrix (any integer or float dtype):
``iou_per_class`` (fractions, NaN where a class has neither GT nor predictions),
``miou_guide`` (NaN -> 0, mean over all C, percent; the guide's ``metrics_new.py``),
``miou_mmseg`` (nanmean over classes with a non-empty union, percent; mmseg/torchmetrics
style), ``pixel_accuracy`` (percent), ``class_totals`` and ``collapse_signature``.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = [
    "ConfusionMatrix",
    "iou_per_class",
    "miou_guide",
    "miou_mmseg",
    "pixel_accuracy",
    "class_totals",
    "collapse_signature",
]

#: how many distinct out-of-range label values ``oor_values`` reports
OOR_TOP = 16
# On accelerators the out-of-range label values are histogrammed on the device (no
# host sync per update) over this window; values beyond it are counted at its edges.
_OOR_LO = -1024
_OOR_HI = 65535
# cap on distinct out-of-range values remembered exactly on the host paths
_OOR_KEEP = 4096

# side bins that follow the C*C matrix bins in the device accumulator
_IGNORED, _PRED_OOR, _FRACTIONAL, _OOR_BASE = 0, 1, 2, 3


def _is_torch(x: Any) -> bool:
    mod = type(x).__module__
    return mod.startswith("torch") and hasattr(x, "device") and hasattr(x, "dtype")


class ConfusionMatrix:
    """Streaming C x C confusion matrix (rows = ground truth, columns = prediction).

    ``update(preds, labels)`` accepts logits ``[B, C', H, W]`` (or ``[C', H, W]`` with
    ``[H, W]`` labels; argmax over the channel dimension) or class maps ``[B, H, W]`` /
    ``[H, W]``, as torch tensors or numpy arrays.  Labels ``[B, 1, H, W]`` are squeezed.

    ``ignore_index`` is an int (any value: -1, 255, ...) or None (nothing ignored;
    every label outside 0..C-1 then counts in ``oor``).
    """

    def __init__(self, num_classes: int, ignore_index: int | None = None):
        if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)):
            raise TypeError(f"num_classes must be an int, got {num_classes!r}")
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if ignore_index is not None and (
            isinstance(ignore_index, bool) or not isinstance(ignore_index, (int, np.integer))
        ):
            raise TypeError(
                f"ignore_index must be an int or None, got {ignore_index!r} "
                "(resolve 'auto' before building a ConfusionMatrix)"
            )
        self.num_classes = int(num_classes)
        self.ignore_index = None if ignore_index is None else int(ignore_index)
        self.reset()

    # ------------------------------------------------------------------ state
    def reset(self) -> None:
        """Forget everything counted so far."""
        C = self.num_classes
        self._host = np.zeros((C, C), dtype=np.int64)
        self._ignored = 0
        self._pred_oor = 0
        self._fractional = 0
        self._oor = 0
        self._oor_values: dict[int, int] = {}
        self.size_mismatch = 0
        self.updates = 0
        self._dev_acc = None  # torch int64 tensor on an accelerator, or None

    def _flush(self) -> None:
        """Move the device accumulator's counts into the host counters (syncs)."""
        acc = self._dev_acc
        if acc is None:
            return
        self._dev_acc = None
        a = acc.cpu().numpy()
        C2 = self.num_classes * self.num_classes
        self._host += a[:C2].reshape(self.num_classes, self.num_classes)
        side = a[C2:]
        self._ignored += int(side[_IGNORED])
        self._pred_oor += int(side[_PRED_OOR])
        self._fractional += int(side[_FRACTIONAL])
        window = side[_OOR_BASE:]
        nz = np.nonzero(window)[0]
        for k in nz:
            self._add_oor(int(k) + _OOR_LO, int(window[k]))

    def _add_oor(self, value: int, count: int) -> None:
        self._oor += count
        d = self._oor_values
        d[value] = d.get(value, 0) + count
        if len(d) > _OOR_KEEP:  # keep memory bounded on garbage labels
            keep = sorted(d.items(), key=lambda kv: -kv[1])[: _OOR_KEEP // 2]
            self._oor_values = dict(keep)

    @property
    def matrix(self) -> np.ndarray:
        """The accumulated matrix, numpy int64 [C, C], rows = GT, columns = prediction."""
        self._flush()
        return self._host.copy()

    @property
    def pixels(self) -> int:
        """Pixels counted in the matrix."""
        self._flush()
        return int(self._host.sum())

    @property
    def oor(self) -> int:
        """Label pixels outside 0..C-1 that are not ``ignore_index`` (not counted)."""
        self._flush()
        return self._oor

    @property
    def oor_values(self) -> dict[int, int]:
        """Out-of-range label value -> pixel count, the 16 largest counts first."""
        self._flush()
        top = sorted(self._oor_values.items(), key=lambda kv: (-kv[1], kv[0]))[:OOR_TOP]
        return dict(top)

    @property
    def ignored(self) -> int:
        """Label pixels equal to ``ignore_index``."""
        self._flush()
        return self._ignored

    @property
    def pred_oor(self) -> int:
        """Labelled pixels whose prediction was outside 0..C-1 (not counted)."""
        self._flush()
        return self._pred_oor

    @property
    def fractional(self) -> int:
        """Non-integer values in floating-point label maps (not counted)."""
        self._flush()
        return self._fractional

    def merge(self, other: "ConfusionMatrix") -> "ConfusionMatrix":
        """Add another matrix's counts (e.g. from another rank) to this one."""
        if not isinstance(other, ConfusionMatrix):
            raise TypeError(f"can only merge a ConfusionMatrix, got {type(other).__name__}")
        if other.num_classes != self.num_classes:
            raise ValueError(
                f"cannot merge confusion matrices with {other.num_classes} and "
                f"{self.num_classes} classes"
            )
        self._flush()
        other._flush()
        self._host += other._host
        self._ignored += other._ignored
        self._pred_oor += other._pred_oor
        self._fractional += other._fractional
        for v, n in other._oor_values.items():
            self._add_oor(v, n)
        # values pruned from other's dict still count in the total
        self._oor += other._oor - sum(other._oor_values.values())
        self.size_mismatch += other.size_mismatch
        self.updates += other.updates
        return self

    def summary(self) -> dict:
        """Counters as a plain dict (handy for the ``eval`` event)."""
        self._flush()
        return {
            "num_classes": self.num_classes,
            "ignore_index": self.ignore_index,
            "pixels": int(self._host.sum()),
            "ignored": self._ignored,
            "oor": self._oor,
            "oor_values": {str(k): v for k, v in self.oor_values.items()},
            "pred_oor": self._pred_oor,
            "fractional": self._fractional,
            "size_mismatch": self.size_mismatch,
        }

    def __repr__(self) -> str:
        return (
            f"ConfusionMatrix(num_classes={self.num_classes}, "
            f"ignore_index={self.ignore_index}, pixels={self.pixels})"
        )

    # ----------------------------------------------------------------- update
    def update(self, preds: Any, labels: Any) -> None:
        """Count one batch.  See the class docstring for accepted shapes."""
        if _is_torch(preds) or _is_torch(labels):
            self._update_torch(preds, labels)
        else:
            self._update_numpy(np.asarray(preds), np.asarray(labels))
        self.updates += 1

    # shapes -------------------------------------------------------------
    @staticmethod
    def _layout(pshape: tuple, lshape: tuple, scores: bool = True
                ) -> tuple[bool, int | None, tuple]:
        """Return (ok, channel_dim or None, label_shape_after_squeeze).

        ``scores``: the predictions are floating point, so one extra dimension is a
        channel dimension (logits); integer predictions must match the labels' shape.
        """
        if len(lshape) == 4 and lshape[1] == 1:
            lshape = (lshape[0],) + tuple(lshape[2:])
        if scores and len(pshape) == len(lshape) + 1 and len(pshape) in (3, 4):
            cdim = 1 if len(pshape) == 4 else 0
            spatial = tuple(pshape[:cdim]) + tuple(pshape[cdim + 1:])
            return spatial == tuple(lshape), cdim, lshape
        if len(pshape) == len(lshape):
            return tuple(pshape) == tuple(lshape), None, lshape
        return False, None, lshape

    # numpy --------------------------------------------------------------
    def _update_numpy(self, preds: np.ndarray, labels: np.ndarray) -> None:
        ok, cdim, lshape = self._layout(preds.shape, labels.shape, preds.dtype.kind == "f")
        if not ok:
            self.size_mismatch += 1
            return
        C = self.num_classes
        lbl = labels.reshape(-1)
        if cdim is not None:
            pred_in_range = preds.shape[cdim] <= C
            pred = preds.argmax(axis=cdim).reshape(-1)
        else:
            pred_in_range = False
            pred = preds.reshape(-1)
            if pred.dtype.kind == "f":
                pred = np.where(np.isfinite(pred), pred, -1).astype(np.int64)
        if lbl.dtype.kind == "b":
            lbl = lbl.astype(np.int64)
        if lbl.dtype.kind == "f":
            finite = np.isfinite(lbl)
            frac = ~finite | (np.where(finite, lbl, 0) != np.floor(np.where(finite, lbl, 0)))
            nfrac = int(frac.sum())
            if nfrac:
                self._fractional += nfrac
                keep = ~frac
                lbl, pred = lbl[keep], pred[keep]
            lbl = lbl.astype(np.int64)
        elif lbl.dtype.kind not in "iu":
            raise TypeError(f"labels must be integer or float, got dtype {labels.dtype}")
        lbl = lbl.astype(np.int64, copy=False)
        pred = pred.astype(np.int64, copy=False)
        ii = self.ignore_index
        if ii is not None:
            is_ign = lbl == ii
            n_ign = int(is_ign.sum())
            self._ignored += n_ign
        else:
            is_ign, n_ign = None, 0
        lbl_ok = (lbl >= 0) & (lbl < C)
        if is_ign is not None and 0 <= ii < C:
            lbl_ok &= ~is_ign
        bad = ~lbl_ok if is_ign is None else ~(lbl_ok | is_ign)
        if bad.any():
            vals, counts = np.unique(lbl[bad], return_counts=True)
            for v, n in zip(vals.tolist(), counts.tolist()):
                self._add_oor(int(v), int(n))
        good = lbl_ok
        if not pred_in_range:
            p_ok = (pred >= 0) & (pred < C)
            self._pred_oor += int((lbl_ok & ~p_ok).sum())
            good = lbl_ok & p_ok
        idx = lbl[good] * C + pred[good]
        self._host += np.bincount(idx, minlength=C * C).reshape(C, C)

    # torch --------------------------------------------------------------
    def _update_torch(self, preds: Any, labels: Any) -> None:
        import torch

        if not torch.is_tensor(preds):
            preds = torch.as_tensor(np.asarray(preds))
        if not torch.is_tensor(labels):
            labels = torch.as_tensor(np.asarray(labels), device=preds.device)
        ok, cdim, lshape = self._layout(tuple(preds.shape), tuple(labels.shape),
                                        preds.dtype.is_floating_point)
        if not ok:
            self.size_mismatch += 1
            return
        with torch.no_grad():
            if labels.device != preds.device:
                labels = labels.to(preds.device)
            if preds.device.type == "cpu":
                self._update_torch_cpu(torch, preds, labels, cdim)
            else:
                self._update_torch_device(torch, preds, labels, cdim)

    def _pred_from(self, torch: Any, preds: Any, cdim: int | None):
        """Return (flat int prediction, whether it is known to lie in 0..C-1)."""
        C = self.num_classes
        if cdim is not None:
            # max(dim).indices is much faster than argmax(dim) for a non-last dim on
            # CPU; both return the first maximal index.
            pred = preds.max(dim=cdim).indices.reshape(-1)
            return pred, preds.shape[cdim] <= C
        pred = preds.reshape(-1)
        if pred.dtype.is_floating_point:
            pred = torch.where(torch.isfinite(pred), pred, torch.full_like(pred, -1)).long()
        elif pred.dtype not in (torch.int32, torch.int64):
            pred = pred.to(torch.int32)
        return pred, False

    def _labels_flat(self, torch: Any, labels: Any):
        """Flat integer labels and a mask of fractional values (or None)."""
        lbl = labels.reshape(-1)
        frac = None
        if lbl.dtype.is_floating_point:
            finite = torch.isfinite(lbl)
            safe = torch.where(finite, lbl, torch.zeros_like(lbl))
            frac = ~finite | (safe != torch.floor(safe))
            lbl = safe.long()
        elif lbl.dtype.is_complex:
            raise TypeError(f"labels must be real, got dtype {labels.dtype}")
        elif lbl.dtype not in (torch.int32, torch.int64):
            # narrow types (bool, uint8, int8, int16, uint16) overflow in label * C;
            # int32 suffices while C*C fits, which it does for any realistic C
            lbl = lbl.to(torch.int32 if self.num_classes ** 2 < 2**31 else torch.int64)
        return lbl, frac

    def _update_torch_cpu(self, torch: Any, preds: Any, labels: Any, cdim: int | None) -> None:
        # One pass builds the bin index label*C + pred for every pixel; pixels that
        # must not be counted are sent to an overflow bin C*C (masked_fill_, no
        # compaction copy), and a single bincount does the rest.  On the CPU a host
        # sync costs nothing, so the rare cases (out-of-range values, fractional
        # labels, bad predictions) are detected from the overflow bin and then
        # handled exactly.
        C = self.num_classes
        C2 = C * C
        pred, pred_in_range = self._pred_from(torch, preds, cdim)
        lbl, frac = self._labels_flat(torch, labels)
        ii = self.ignore_index
        bad = (lbl < 0) | (lbl >= C)
        if ii is not None and 0 <= ii < C:
            bad |= lbl == ii
        if frac is not None:
            bad |= frac
        if not pred_in_range:
            p_bad = (pred < 0) | (pred >= C)
            n_pred_bad = int((p_bad & ~bad).sum())
            if n_pred_bad:
                self._pred_oor += n_pred_bad
                bad |= p_bad
        else:
            n_pred_bad = 0
        idx = torch.add(pred, lbl, alpha=C)
        idx.masked_fill_(bad, C2)
        counts = torch.bincount(idx, minlength=C2 + 1).numpy()
        self._host += counts[:C2].reshape(C, C)
        n_left = int(counts[C2]) - n_pred_bad
        if n_left <= 0:
            return
        if frac is not None:
            nfrac = int(frac.sum())
            self._fractional += nfrac
            n_left -= nfrac
        if ii is not None:
            is_ign = lbl == ii
            if frac is not None:
                is_ign &= ~frac
            n_ign = int(is_ign.sum())
            self._ignored += n_ign
            n_left -= n_ign
        if n_left <= 0:
            return
        oor_mask = (lbl < 0) | (lbl >= C)
        if ii is not None:
            oor_mask &= lbl != ii
        if frac is not None:
            oor_mask &= ~frac
        vals, cnts = torch.unique(lbl[oor_mask], return_counts=True)
        for v, n in zip(vals.tolist(), cnts.tolist()):
            self._add_oor(int(v), int(n))

    def _update_torch_device(self, torch: Any, preds: Any, labels: Any, cdim: int | None) -> None:
        # Sync-free: every pixel goes to exactly one bin of a device accumulator (the
        # C*C matrix, then side bins for ignored / bad prediction / fractional / the
        # out-of-range value window); scatter_add_ never reads anything back.
        C = self.num_classes
        C2 = C * C
        nbins = C2 + _OOR_BASE + (_OOR_HI - _OOR_LO + 1)
        device = preds.device
        if self._dev_acc is not None and self._dev_acc.device != device:
            self._flush()
        if self._dev_acc is None:
            self._dev_acc = torch.zeros(nbins, dtype=torch.int64, device=device)
        pred, pred_in_range = self._pred_from(torch, preds, cdim)
        lbl, frac = self._labels_flat(torch, labels)
        lbl = lbl.long()
        pred = pred.long()
        ii = self.ignore_index
        lbl_ok = (lbl >= 0) & (lbl < C)
        if ii is not None and 0 <= ii < C:
            lbl_ok &= lbl != ii
        # out-of-range label window bin (used where the label is neither ok nor ignored)
        idx = C2 + _OOR_BASE + (lbl.clamp(_OOR_LO, _OOR_HI) - _OOR_LO)
        if ii is not None:
            idx = torch.where(lbl == ii, torch.full_like(idx, C2 + _IGNORED), idx)
        if pred_in_range:
            idx = torch.where(lbl_ok, lbl * C + pred, idx)
        else:
            p_ok = (pred >= 0) & (pred < C)
            idx = torch.where(lbl_ok & ~p_ok, torch.full_like(idx, C2 + _PRED_OOR), idx)
            idx = torch.where(lbl_ok & p_ok, lbl * C + pred, idx)
        if frac is not None:
            idx = torch.where(frac, torch.full_like(idx, C2 + _FRACTIONAL), idx)
        ones = torch.ones(1, dtype=torch.int64, device=device).expand(idx.numel())
        self._dev_acc.scatter_add_(0, idx, ones)


# ---------------------------------------------------------------------------
# functions on a numpy matrix (rows = ground truth, columns = prediction)

def _as_matrix(m: Any) -> np.ndarray:
    a = np.asarray(m, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise ValueError(f"expected a square C x C matrix, got shape {a.shape}")
    return a


def class_totals(m: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(gt, pred, correct) per class: row sums, column sums and the diagonal (int64)."""
    a = np.asarray(m)
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise ValueError(f"expected a square C x C matrix, got shape {a.shape}")
    a = a.astype(np.int64, copy=False)
    return a.sum(axis=1), a.sum(axis=0), np.diag(a).copy()


def iou_per_class(m: Any) -> np.ndarray:
    """IoU of each class as a fraction in [0, 1]; NaN where the union is 0
    (the class is neither in the ground truth nor predicted)."""
    a = _as_matrix(m)
    inter = np.diag(a)
    union = a.sum(axis=0) + a.sum(axis=1) - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = inter / union
    iou[union == 0] = np.nan
    return iou


def miou_guide(m: Any) -> float:
    """The guide's mIoU (``metrics_new.py``): NaN IoUs count as 0, mean over all C
    classes, in percent.  0.0 for an empty matrix."""
    iou = iou_per_class(m)
    if iou.size == 0:
        return 0.0
    return float(np.nan_to_num(iou, nan=0.0).mean() * 100.0)


def miou_mmseg(m: Any) -> float:
    """mmseg-style mIoU: mean over the classes whose union is non-empty, in percent.
    NaN when no class has any pixel."""
    iou = iou_per_class(m)
    present = ~np.isnan(iou)
    if not present.any():
        return float("nan")
    return float(iou[present].mean() * 100.0)


def pixel_accuracy(m: Any) -> float:
    """Share of counted pixels predicted correctly, in percent; NaN when empty."""
    a = _as_matrix(m)
    total = a.sum()
    if total == 0:
        return float("nan")
    return float(np.trace(a) / total * 100.0)


def collapse_signature(m: Any) -> dict | None:
    """If exactly one class c is predicted, describe the collapse, else None.

    Under the guide's metric a collapse to c gives IoU_c = p_c (c's share of the
    ground-truth pixels) and 0 for every other class, so mIoU = 100 * p_c / C exactly;
    it equals 100 / C only when c is also the only class present in the ground truth.

    Returns ``{"class": c, "share": p_c, "expected_miou": 100*p_c/C,
    "observed_miou": miou_guide(m), "expected_miou_mmseg": 100*p_c/K,
    "observed_miou_mmseg": miou_mmseg(m), "present": K}`` where K is the number of
    classes with a non-empty union (classes in the ground truth, plus c).
    """
    gt, pred, _ = class_totals(m)
    total = int(gt.sum())
    if total == 0:
        return None
    predicted = np.nonzero(pred)[0]
    if predicted.size != 1:
        return None
    c = int(predicted[0])
    C = int(gt.size)
    share = float(gt[c]) / total
    present = int(((gt + pred) > 0).sum())
    return {
        "class": c,
        "share": share,
        "expected_miou": 100.0 * share / C,
        "observed_miou": miou_guide(m),
        "expected_miou_mmseg": 100.0 * share / present if present else math.nan,
        "observed_miou_mmseg": miou_mmseg(m),
        "present": present,
    }
