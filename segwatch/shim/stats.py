"""On-device statistics of batches and logits.

Every function here returns *device tensors* (0-d or 1-d), never Python numbers: the shim
queues them and reads them back in one transfer every few steps. None of them calls
``.item()``, ``.tolist()``, ``torch.unique``, ``nonzero`` or boolean-mask indexing, so they
do not synchronise a CUDA device (the read-back does, once). ``host_oor_values`` is the one
exception and is only called on CPU tensors or at read-back time.
"""
from __future__ import annotations

import math
from typing import Any, Iterator

import torch

LABEL_KEYS = ("label", "labels", "gt", "gts", "target", "targets", "mask", "masks", "seg", "segm",
              "semantic", "sem", "annotation", "ann")


# ---------------------------------------------------------------------------------------
# finding tensors in a batch
def iter_tensors(obj: Any, key: str = "", depth: int = 0) -> Iterator[tuple[str, torch.Tensor]]:
    """(key, tensor) for every tensor in nested tuples / lists / dicts (depth-limited)."""
    if isinstance(obj, torch.Tensor):
        yield key, obj
        return
    if depth > 3:
        return
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from iter_tensors(v, str(k) if not key else f"{key}.{k}", depth + 1)
    elif isinstance(obj, (list, tuple)):
        if len(obj) > 64:
            return
        for i, v in enumerate(obj):
            yield from iter_tensors(v, str(i) if not key else f"{key}.{i}", depth + 1)


def _labelish_name(key: str) -> bool:
    last = key.rsplit(".", 1)[-1].lower()
    return any(last == k or last.startswith(k) or last.endswith(k) for k in LABEL_KEYS)


def classify_batch(batch: Any) -> tuple[list[tuple[str, torch.Tensor]], tuple[str, torch.Tensor] | None]:
    """Split a batch into image-like float tensors and (at most) one label map.

    image-like: 4-D floating [B, C, H, W]. label map: integer [B, H, W] or [B, 1, H, W], or a
    floating [B, H, W] / [B, 1, H, W] under a key named like label/gt/target/mask/seg.
    A label named like a label wins over an unnamed one. mmseg-style batches
    (``{'inputs': [...], 'data_samples': [...]}``): a list of per-sample 3-D tensors holds
    [C, H, W] samples, never a [B, H, W] label map; the labels are the samples'
    ``gt_sem_seg.data``, stacked to [B, H, W] when their shapes agree (unless the batch
    has a tensor named like a label: the mmseg adapter's collate adds ``gt_sem_seg``).
    """
    images: list[tuple[str, torch.Tensor]] = []
    named_label = None
    other_label = None
    per_sample = _per_sample_keys(batch)
    for key, t in iter_tensors(batch):
        if per_sample and key in per_sample:
            continue
        if t.dim() == 4 and t.is_floating_point():
            if t.shape[1] == 1 and _labelish_name(key):
                if named_label is None:
                    named_label = (key, t)
                continue
            images.append((key, t))
        elif (t.dim() == 3 or (t.dim() == 4 and t.shape[1] == 1)) and not t.is_complex():
            if t.dtype == torch.bool:
                continue
            if t.is_floating_point():
                if _labelish_name(key) and named_label is None:
                    named_label = (key, t)
            else:
                if _labelish_name(key):
                    if named_label is None:
                        named_label = (key, t)
                elif other_label is None:
                    other_label = (key, t)
    label = named_label or (_data_samples_label(batch) if isinstance(batch, dict) else None) or other_label
    if label is not None and images:
        # A label map must belong to the images: same batch size.
        if label[1].shape[0] != images[0][1].shape[0]:
            label = None
    return images, label


def _per_sample_keys(batch: Any) -> set[str]:
    """Keys (as ``iter_tensors`` names them) of the tensors in a list whose items are all
    3-D tensors: per-sample [C, H, W] images of a list-collated batch (mmseg's ``inputs``)."""
    out: set[str] = set()
    if isinstance(batch, dict):
        items = [(str(k), v) for k, v in batch.items()]
    elif isinstance(batch, list):
        items = [("", batch)]
    else:
        return out
    for key, v in items:
        if isinstance(v, list) and 0 < len(v) <= 64 and all(isinstance(t, torch.Tensor) and t.dim() == 3 for t in v):
            out.update(f"{key}.{i}" if key else str(i) for i in range(len(v)))
    return out


def _data_samples_label(batch: Any) -> tuple[str, torch.Tensor] | None:
    """mmseg's labels: ``data_samples[i].gt_sem_seg.data`` ([1, H, W] each) stacked to
    [B, H, W] when every sample has one and their shapes agree (else None)."""
    if not isinstance(batch, dict):
        return None
    samples = batch.get("data_samples")
    if not isinstance(samples, (list, tuple)) or not samples or len(samples) > 64:
        return None
    maps = []
    for ds in samples:
        gt = getattr(ds, "gt_sem_seg", None)
        t = getattr(gt, "data", None)
        if not isinstance(t, torch.Tensor) or t.is_floating_point() or t.dim() not in (2, 3):
            return None
        if t.dim() == 3:
            if t.shape[0] != 1:
                return None
            t = t[0]
        if maps and (t.shape != maps[0].shape or t.device != maps[0].device):
            return None
        maps.append(t)
    return "data_samples.gt_sem_seg", torch.stack(maps)


def squeeze_label(t: torch.Tensor) -> torch.Tensor:
    return t[:, 0] if t.dim() == 4 else t


# ---------------------------------------------------------------------------------------
# histograms without a host sync
def hist(values: torch.Tensor, valid: torch.Tensor, n: int) -> torch.Tensor:
    """Counts of 0..n-1 of ``values`` where ``valid`` (int64, on the values' device).

    ``torch.bincount`` sizes its output from the data's max on CUDA (a sync); scatter_add
    into a fixed-size buffer does not.
    """
    v = values.reshape(-1)
    m = valid.reshape(-1)
    idx = torch.where(m, v.long(), torch.zeros((), dtype=torch.long, device=v.device))
    if v.device.type == "cpu":
        idx = torch.where(m, idx, torch.full((), n, dtype=torch.long))
        return torch.bincount(idx, minlength=n + 1)[:n]
    out = torch.zeros(n, dtype=torch.long, device=v.device)
    return out.scatter_add_(0, idx, m.long())


# ---------------------------------------------------------------------------------------
# labels
def _bincount_fixed(idx: torch.Tensor, n: int) -> torch.Tensor:
    """Counts of 0..n-1 of ``idx`` (int64, values already in 0..n-1) without a host sync."""
    if idx.device.type == "cpu":
        return torch.bincount(idx, minlength=n)
    out = torch.zeros(n, dtype=torch.long, device=idx.device)
    return out.scatter_add_(0, idx, torch.ones((), dtype=torch.long, device=idx.device).expand(idx.numel()))


def label_stats(lab: torch.Tensor, num_classes: int, ignore: int | None) -> dict[str, torch.Tensor]:
    """Device statistics of a label map [B, H, W] (or [B, 1, H, W]).

    One ``aminmax`` and one bincount of the values clamped to [lo, hi] (lo below 0 and below
    the ignore value, hi above C-1 and above it): the class histogram, the ignore count and
    the out-of-range total are slices of it (a handful of ops, not one pass per statistic).
    """
    lab = squeeze_label(lab)
    dev = lab.device
    zero = torch.zeros((), dtype=torch.long, device=dev)
    out: dict[str, torch.Tensor] = {}
    if lab.is_floating_point():
        finite = torch.isfinite(lab)
        r = torch.round(lab)
        out["fractional"] = ((lab != r) & finite).sum()
        labi = torch.where(finite, r, torch.full((), -(2 ** 30), dtype=lab.dtype, device=dev)).long()
    else:
        out["fractional"] = zero
        labi = lab if lab.dtype != torch.bool else lab.long()   # (int64 only where a clamp needs it)
    if labi.numel():
        out["min"], out["max"] = torch.aminmax(labi)
    else:
        out["min"] = out["max"] = torch.zeros((), device=dev)
    C = int(num_classes)
    lo, hi = -1, C
    if ignore is not None and -4096 <= ignore <= C + 4096:
        lo, hi = min(lo, ignore - 1), max(hi, ignore + 1)
    flat = labi.reshape(-1)
    if dev.type == "cpu" and labi.numel() and 0 <= int(out["min"]) and int(out["max"]) <= hi:
        # on CPU the range is known for free: values already in [0, hi] need no clamp (the
        # clamp and the shift each write a new int64 copy of the map; in a training step those
        # fresh pages cost ~10x the bincount itself). Value v is counted at counts[v - off].
        off = 0
        counts = torch.bincount(flat, minlength=hi + 1)
    else:
        off = lo
        counts = _bincount_fixed(flat.long().clamp(lo, hi) - lo, hi - lo + 1)
    hist_ = counts[-off:C - off]
    if ignore is None:
        out["ignore"] = zero
    elif 0 <= ignore < C:
        hist_ = hist_.clone()
        out["ignore"] = hist_[ignore].clone()
        hist_[ignore] = 0
    elif off <= ignore <= hi:
        out["ignore"] = counts[ignore - off]
    elif lo <= ignore < off:   # (values below 0 do not occur here)
        out["ignore"] = zero
    else:   # an ignore value far outside the classes: one comparison pass
        out["ignore"] = (labi == ignore).sum()
    out["hist"] = hist_
    out["oor_total"] = labi.numel() - hist_.sum() - out["ignore"]
    out["boundary"] = boundary_share(labi[:1])
    return out


def boundary_share(lab: torch.Tensor) -> torch.Tensor:
    """Share of pixels strictly between two different neighbouring values (left/right).

    Nearest-neighbour resizing never creates such pixels; bilinear resizing of a label map
    creates them along every boundary between classes whose ids differ by more than one.
    """
    if lab.shape[-1] < 3:
        return torch.zeros((), dtype=torch.float32, device=lab.device)
    lab = lab.float()    # exact for ids below 2^24; float compares vectorise, int64 ones do not
    left, mid, right = lab[..., :-2], lab[..., 1:-1], lab[..., 2:]
    # strictly between: both differences non-zero and of one sign (fewer ops than min/max)
    between = (mid - left).mul_(right - mid) > 0
    return between.sum().float() / float(max(1, lab.numel()))


def host_oor_values(lab: torch.Tensor, num_classes: int, ignore: int | None, top: int = 16) -> dict[str, int]:
    """``{"value": count}`` for label values outside 0..C-1 that are not ``ignore``.

    Uses ``torch.unique`` (a sync on CUDA): call it only on CPU tensors or at read-back time.
    Works on the out-of-range subset only.
    """
    lab = squeeze_label(lab)
    if lab.is_floating_point():
        finite = torch.isfinite(lab)
        labi = torch.round(lab[finite]).long()
    else:
        labi = lab.reshape(-1).long()
    bad = (labi < 0) | (labi >= num_classes)
    if ignore is not None:
        bad &= labi != ignore
    sub = labi[bad]
    if sub.numel() == 0:
        return {}
    vals, counts = torch.unique(sub, return_counts=True)
    pairs = sorted(zip(vals.tolist(), counts.tolist()), key=lambda p: -p[1])[:top]
    return {str(int(v)): int(c) for v, c in pairs}


# ---------------------------------------------------------------------------------------
# inputs
def probability_signature(logits: torch.Tensor) -> torch.Tensor:
    """[min, max, max |sum over the class dim - 1|] of (a subsample of) the logits: values
    in [0, 1] that sum to 1 per pixel are probabilities (softmax applied before the loss)."""
    x = logits.detach()
    if x.dtype != torch.float32 and x.dtype != torch.float64:
        x = x.float()
    mn, mx = torch.aminmax(x)
    dev = (x.sum(1) - 1).abs().amax()
    return torch.stack([mn, mx, dev.to(mn.dtype)])


def subsample_stride(shape, max_elems: int) -> int:
    """Smallest spatial stride s such that prod(shape) / s**2 <= max_elems."""
    n = 1
    for d in shape:
        n *= int(d)
    if n <= max_elems:
        return 1
    return int(math.ceil(math.sqrt(n / max_elems)))


def input_stats(x: torch.Tensor, max_elems: int = 1 << 16) -> torch.Tensor:
    """[mean, std, min, max, nonfinite] of an image-like tensor, over its finite values.

    The non-finite count is exact (whole batch); mean/std/min/max use the first sample,
    strided down to at most ``max_elems`` values (cheap on CPU too). On CPU (where reading a
    value costs no device sync) one ``sum`` of the batch decides: finite means every value is
    finite (a sum overflowing to inf only sends it down the exact path), and the statistics
    are three fused reductions; otherwise, and on other devices, the masked exact path.
    """
    xs = x[0]
    s = subsample_stride(xs.shape, max_elems)
    if s > 1:
        xs = xs[..., ::s, ::s]
    xs = xs.float()
    if x.device.type == "cpu" and math.isfinite(x.sum().item()):
        mn, mx = torch.aminmax(xs)
        # mean and std from the sums of the values shifted by their minimum (no cancellation
        # for data far from 0, e.g. 0-255 pixels): two fused passes; ``std_mean`` costs ~15x more
        # on CPU (a Welford pass per value)
        n = max(1, xs.numel())
        d = xs - mn
        s1, s2 = d.sum().item(), torch.linalg.vecdot(d.reshape(-1), d.reshape(-1)).item()
        m = s1 / n
        var = max(0.0, s2 / n - m * m)
        return torch.tensor([float(mn) + m, math.sqrt(var), float(mn), float(mx), 0.0], dtype=xs.dtype)
    nonfinite = (~torch.isfinite(x)).sum()
    fin = torch.isfinite(xs)
    n = fin.sum().clamp(min=1)
    xz = torch.where(fin, xs, 0.0)
    mean = xz.sum() / n
    var = (torch.where(fin, xs - mean, 0.0) ** 2).sum() / n
    mn = torch.where(fin, xs, float("inf")).min()
    mx = torch.where(fin, xs, float("-inf")).max()
    return torch.stack([mean, var.sqrt(), mn, mx, nonfinite.to(xs.dtype)])


# ---------------------------------------------------------------------------------------
# image / label edge alignment
def _nearest_index(n_in: int, n_out: int, device) -> torch.Tensor:
    return (torch.arange(n_out, device=device, dtype=torch.float32) * (n_in / n_out)).floor().long().clamp(max=n_in - 1)


def resize_nearest(lab: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Nearest resize of [..., H, W] by index gathering (same rule as F.interpolate 'nearest')."""
    H, W = lab.shape[-2], lab.shape[-1]
    if (H, W) == (h, w):
        return lab
    ri = _nearest_index(H, h, lab.device)
    ci = _nearest_index(W, w, lab.device)
    return lab.index_select(-2, ri).index_select(-1, ci)


def align_sums(img: torch.Tensor, lab: torch.Tensor, target: int = 64, finite: bool = False) -> torch.Tensor:
    """Edge agreement of one sample: [sum_g_at_edges, n_edges, sum_g, n] for the label and
    the same four for the label mirrored horizontally (8 values, device tensor).

    The image (first sample, channels summed) is average-pooled to about ``target`` pixels
    wide; its gradient magnitude (|right - here| + |below - here|) is max-filtered 3x3 (one
    pixel of tolerance). The label is resized with nearest to the same grid; its class
    boundaries (a right or lower neighbour that differs) are the edges. Everything is taken
    on the grid's interior, where the filter needs no padding (the outer two pixel rings are
    left out). ``align = mean_g(edges) / (mean_g(edges) + mean_g(rest))``: about 0.5 when
    edges are unrelated, close to 1 when label boundaries sit on image edges (the scale of
    the image cancels). ~20 small ops: each costs ~10-50 µs inside a training step on CPU.
    ``finite``: the caller knows the image holds no NaN/inf (skips one pass).
    """
    x = img[0].float().sum(0)                                   # [H, W]
    if not finite:
        x = torch.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
    s = max(1, x.shape[-1] // target)
    if s > 1:
        x = torch.nn.functional.avg_pool2d(x[None, None], s, s)[0, 0]
    h, w = x.shape
    if h < 4 or w < 4:      # no interior: nothing to judge (align_from_sums gives None)
        return torch.zeros(8, dtype=torch.float32, device=x.device)
    a = x[:-1, :-1]
    g = (x[:-1, 1:] - a).abs_().add_((x[1:, :-1] - a).abs_())   # [h-1, w-1]
    r = torch.maximum(torch.maximum(g[:, :-2], g[:, 1:-1]), g[:, 2:])
    m = torch.maximum(torch.maximum(r[:-2], r[1:-1]), r[2:])    # [h-3, w-3]: 3x3 max of g
    lab1 = squeeze_label(lab)[0]
    if lab1.is_floating_point():
        lab1 = torch.nan_to_num(lab1, nan=-1.0).round()
    lab1 = resize_nearest(lab1, h, w).float()                   # exact for ids < 2^24
    # the label and its mirror as one [2, h, w] pair: one op per step for both
    pair = torch.stack([lab1, lab1.flip(-1)])
    p = pair[:, :-1, :-1]
    e = ((pair[:, :-1, 1:] != p) | (pair[:, 1:, :-1] != p))[:, 1:-1, 1:-1]    # [2, h-3, w-3]
    ge = (e * m).sum((1, 2))
    ne = e.sum((1, 2), dtype=m.dtype)
    # [sum_g_at_edges, n_edges, sum_g, n] for the label, then for its mirror
    n = torch.full((2,), float(m.numel()), dtype=m.dtype, device=m.device)
    return torch.stack([ge, ne, m.sum().expand(2), n], 1).reshape(-1)


def align_from_sums(v: list[float]) -> tuple[float | None, float | None]:
    res = []
    for i in (0, 4):
        ge, ne, gs, n = v[i:i + 4]
        if ne < 1 or n - ne < 1 or gs <= 0:
            res.append(None)
            continue
        me = ge / ne
        mr = (gs - ge) / (n - ne)
        res.append(round(me / (me + mr), 4) if me + mr > 0 else None)
    return res[0], res[1]


# ---------------------------------------------------------------------------------------
# logits
def find_logits(out: Any, batch_size: int | None, num_classes: int | None) -> torch.Tensor | None:
    """A 4-D floating [B, C, H, W] tensor in a model output (tensor, dict — 'out' first —, tuple).

    Prefers channels == num_classes; otherwise the first 4-D floating tensor with C >= 2.
    """
    cands = []
    if isinstance(out, torch.Tensor):
        cands = [out]
    elif isinstance(out, dict):
        keys = list(out.keys())
        keys.sort(key=lambda k: 0 if str(k) in ("out", "logits", "pred", "seg_logits") else 1)
        cands = [out[k] for k in keys if isinstance(out[k], torch.Tensor)]
    elif isinstance(out, (list, tuple)) and len(out) <= 16:
        cands = [t for t in out if isinstance(t, torch.Tensor)]
    else:
        lg = getattr(out, "logits", None)
        if isinstance(lg, torch.Tensor):
            cands = [lg]
    ok = [t for t in cands if t.dim() == 4 and t.is_floating_point() and t.shape[1] >= 2
          and (batch_size is None or t.shape[0] == batch_size)]
    if not ok:
        return None
    if num_classes:
        for t in ok:
            if t.shape[1] == num_classes:
                return t
    return ok[0]


#: class_argmax works through logits in chunks of at most this many values (a 4 MB float32
#: temporary, whatever the eval batch's size; also the fastest size measured, in cache)
ARGMAX_CHUNK = 1 << 20


def class_argmax(logits: torch.Tensor) -> torch.Tensor:
    """``logits.max(1).indices``, the same values (the first maximum; the first NaN where a
    pixel has one), faster on CPU.

    PyTorch's CPU index reduction over the class dim runs at ~4 ns a value, while elementwise
    float ops run at ~0.2 ns: the exact evaluation confusion matrix spent most of its time
    there (5.5 ms of ~8.5 per 4x37x96x96 batch, 125 ms per 2x150x256x256). Here, per chunk:
    the channel max (a fast reduction), then ``sign(x - max) + 1`` is 1 exactly where a value
    equals its pixel's max (an infinite max gives inf - inf = NaN there: counted as a hit),
    times the weights C..1 and a second max over channels gives the first such channel. A
    chunk with a NaN max (NaN logits) takes PyTorch's own path; on CPU that check is a host
    read with no device to wait for. Other devices, dtypes and strided views (copying one
    costs about as much as it saves, measured on the training probe's subsample): ``max(1)``.
    """
    x = logits
    if (x.device.type != "cpu" or x.dtype not in (torch.float32, torch.float64) or x.dim() < 2
            or x.shape[1] < 2 or x.numel() < (1 << 14) or not x.is_contiguous()):
        return x.max(1).indices
    n, c = x.shape[0], x.shape[1]
    rest = tuple(x.shape[2:])
    x3 = x.reshape(n, c, -1)
    length = x3.shape[2]
    weights = torch.arange(c, 0, -1, dtype=x.dtype).view(1, c, 1)
    out = torch.empty((n, length), dtype=torch.long)
    per_item = c * length
    if per_item <= ARGMAX_CHUNK:
        k = max(1, ARGMAX_CHUNK // per_item)
        chunks = [(slice(i, i + k), slice(None)) for i in range(0, n, k)]
    else:
        cols = max(1, ARGMAX_CHUNK // c)
        chunks = [(slice(i, i + 1), slice(j, j + cols)) for i in range(n) for j in range(0, length, cols)]
    for rows, span in chunks:
        part = x3[rows, :, span]
        top = part.amax(1, keepdim=True)
        if bool(top.isnan().any()):
            out[rows, span] = part.max(1).indices
            continue
        # inf - inf is NaN; torch's sign() gives 0 for it today (a hit), and nan_to_num
        # keeps it a hit should sign() ever propagate NaN
        hit = torch.sub(part, top).sign_().add_(1).nan_to_num_(nan=1.0)
        out[rows, span] = c - hit.mul_(weights).amax(1).long()
    return out.reshape((n,) + rest)


class DeviceConfusion:
    """C x C confusion matrix accumulated on the device (rows = GT, columns = prediction).

    Update is sync-free (scatter_add into a fixed buffer); the matrix is read back once per
    evaluation. Out-of-range labels (not ignore) are counted in ``oor``; batches whose
    prediction and label sizes differ are counted in ``size_mismatch`` and skipped.
    """

    def __init__(self, num_classes: int, ignore: int | None) -> None:
        self.C = int(num_classes)
        self.ignore = ignore
        self.mat: torch.Tensor | None = None
        self.oor: torch.Tensor | None = None
        self.pred_oor: torch.Tensor | None = None   # labelled pixels predicted as a class >= C
        self.size_mismatch = 0
        self.batches = 0

    def update(self, pred: torch.Tensor, lab: torch.Tensor) -> bool:
        lab = squeeze_label(lab)
        if pred.shape != lab.shape:
            self.size_mismatch += 1
            return False
        if lab.device != pred.device:
            lab = lab.to(pred.device, non_blocking=True)
        if lab.is_floating_point():
            lab = torch.nan_to_num(lab, nan=-1.0).round()
        lab = lab.long().reshape(-1)
        p = pred.reshape(-1).long()
        C = self.C
        lab_ok = (lab >= 0) & (lab < C)
        if self.ignore is not None:
            ign = lab == self.ignore
            lab_ok &= ~ign
            oor = (~lab_ok & ~ign).sum()
        else:
            oor = (~lab_ok).sum()
        pred_ok = p < C
        valid = lab_ok & pred_ok
        pred_oor = (lab_ok & ~pred_ok).sum()
        if self.mat is None or self.mat.device != p.device:
            self.mat = torch.zeros(C * C, dtype=torch.long, device=p.device)
            self.oor = torch.zeros((), dtype=torch.long, device=p.device)
            self.pred_oor = torch.zeros((), dtype=torch.long, device=p.device)
        self.mat += hist(lab * C + p, valid, C * C)
        self.oor += oor
        self.pred_oor += pred_oor
        self.batches += 1
        return True
