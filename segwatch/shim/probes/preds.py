"""The ``preds`` probe: the predicted-class histogram on a strided subsample of the logits,
with the labels at the logits' size (correct / valid pixels), and the probability signature
(value range, class-dim sums). The root (or head) forward hook feeds it; evaluation batches
are paired in the pass's confusion matrix. Its cost is the ``preds`` entry of the sampler."""
from __future__ import annotations

import math

import torch

from .. import stats as S
from ..common import _Batch, _OneThread, _Rec

#: training: the argmax runs on a strided subsample of at most this many logit values (the
#: argmax over the class dim is the probe's main cost, ~4 ns a value on CPU: 2^18 values
#: took ~0.6-1.2 ms). 2^16 keeps ~1,700 pixels at 37 classes: a class that is more than a
#: stray pixel (0.5 %) still has ~9 of them.
PRED_VALUES = 1 << 16


class PredsProbe:
    """Methods of ``Shim`` (segwatch.shim.runtime); the state lives on the Shim."""

    def _root_post(self, module, args, kwargs, output):
        if not self._on("forward"):
            return None
        t0 = self._clock()
        probe = None
        try:
            if self.fault:
                self._inject("forward")
            self._batches_without_root = 0
            site_out = self._site_out
            self._site_out = None
            b = self._cur
            val = (not torch.is_grad_enabled()) or (b is not None and b.phase == "val")
            if not val and (not self.sampler.due("preds", self.step + 1) or (b is not None and b.preds_done)
                            or not self._on("preds")):
                self.sampler.spend(None, self._clock() - t0)
                return None
            B = None
            if b is not None and b.images:
                B = b.images[0][1].shape[0]
            if b is not None and b.label is not None and b.device_label is None:
                # the labels as the model received them (already on its device), if passed in
                lab = b.label[1]
                for _, t in S.iter_tensors([list(args), dict(kwargs or {})]):
                    if t is not lab and tuple(t.shape) == tuple(lab.shape) and t.dtype == lab.dtype:
                        b.device_label = t
                        break
            logits = S.find_logits(output, B, self.num_classes)
            site = "root"
            if logits is not None and self.cfg_num_classes and logits.shape[1] != self.cfg_num_classes \
                    and site_out is not None:
                logits = None
            if logits is None and site_out is not None:
                logits = S.find_logits(site_out, B, self.num_classes)
                site = self._head_name or "head"
            if logits is None and site_out is None and self._head_ref is not None and not self._head_hooked:
                head = self._head_ref()
                if head is not None:   # the root stopped returning logits (training): watch the head
                    self._root_handles.append(head.register_forward_hook(self._head_post))
                    self._head_hooked = True
            if logits is not None:
                probe = self._on_logits(logits, b, site)
        except Exception as exc:
            self._fail("forward", exc)
        self.sampler.spend(probe, self._clock() - t0)
        return None

    def _on_logits(self, logits: torch.Tensor, b: _Batch | None, site: str | None = None) -> str | None:
        if self.num_classes is None:
            self.num_classes = int(logits.shape[1])
        val = (not torch.is_grad_enabled()) or (b is not None and b.phase == "val")
        if val:
            if not self._on("eval"):
                return "eval"
            try:
                self._inject("eval")
                ev = self._eval
                if b is None or b.label is None or b.consumed:
                    return "eval"
                if ev is None:
                    return "eval"
                b.consumed = True
                lab = b.device_label if b.device_label is not None else b.label[1]
                with torch.no_grad(), _OneThread():
                    pred = S.class_argmax(logits.detach())
                    if not ev.explicit:
                        self._eval_update(ev, pred, lab)
                    if self._on("preds") and len(ev.records) < 8000:
                        rec = self._preds_record(logits, lab, "val", pred=pred, full=True, site=site)
                        if rec is not None:
                            ev.records.append(rec)
            except Exception as exc:
                self._fail("eval", exc)
            return "eval"
        # training
        if not self._on("preds"):
            return None
        k = self.step + 1
        if b is not None and b.preds_done:
            return None
        if not self.sampler.due("preds", k):
            return None
        self.sampler.mark("preds", k)
        if b is not None:
            b.preds_done = True
        lab = None
        if b is not None and b.label is not None:
            lab = b.device_label if b.device_label is not None else b.label[1]
        rec = self._preds_record(logits, lab, "train", site=site)
        if rec is not None:
            self._pending.append(rec)
        return "preds"

    def _preds_record(self, logits, lab, phase, pred=None, full=False, site=None) -> _Rec | None:
        try:
            self._inject("preds")
            fields_stride = 1
            shape = list(logits.shape)
            with torch.no_grad(), _OneThread():
                n = self.num_classes or logits.shape[1]
                h, w = logits.shape[-2:]
                lab_r = None
                if lab is not None and lab.shape[0] == logits.shape[0]:
                    lab2 = S.squeeze_label(lab)
                    if full and tuple(lab2.shape[-2:]) != (h, w):
                        lab_r = None
                    else:
                        lab_r = S.resize_nearest(lab2, h, w)
                        if lab_r.device != logits.device:
                            lab_r = lab_r.to(logits.device, non_blocking=True)
                if pred is None:
                    # training: the prediction histogram on a strided subsample of the logits
                    st = S.subsample_stride(logits.shape, PRED_VALUES)
                    if st > 1:
                        logits = logits[..., ::st, ::st]
                        h, w = logits.shape[-2:]
                        if lab_r is not None:
                            lab_r = lab_r[..., ::st, ::st]
                        fields_stride = st
                    pred = S.class_argmax(logits.detach())
                    # the probability signature is a coarse check (range, class sums):
                    # a further subsample of at most 2^12 logit values (~110 pixels at 37 classes) is
                    # enough: a softmax output is in [0, 1] and sums to 1 at every pixel
                    st2 = S.subsample_stride(logits.shape, 1 << 12)
                    prob = S.probability_signature(logits[..., ::st2, ::st2] if st2 > 1 else logits)
                else:
                    prob = None
                dev = self._pred_stats_from(pred, logits.shape[1], n, lab_r)
                if prob is not None:
                    dev["prob"] = prob
            fields = {"phase": phase, "shape": shape, "channels": int(logits.shape[1]),
                      "site": site or self._site_name, "stride": fields_stride}
            return _Rec("preds", self.step, fields, dev, self._preds_post)
        except Exception as exc:
            self._fail("preds", exc)
            return None

    def _pred_stats_from(self, pred, C, n, lab_r):
        # predictions are always in 0..C-1: one bincount, no validity mask
        out = {"hist": S._bincount_fixed(pred.reshape(-1), max(C, n))[:n]}
        if lab_r is not None:
            lab = lab_r
            if lab.is_floating_point():
                lab = torch.nan_to_num(lab, nan=-1.0).round()
            lab = lab.long().reshape(-1)
            # labels outside 0..n-1 (and the ignore value) land in bin n, dropped
            bad = torch.full((), n, dtype=torch.long, device=lab.device)
            idx = torch.where((lab >= 0) & (lab < n), lab, bad)
            if self.ignore is not None and 0 <= self.ignore < n:
                idx = torch.where(lab == self.ignore, bad, idx)
            gt = S._bincount_fixed(idx, n + 1)[:n]
            out["gt_hist"] = gt
            out["correct"] = (pred.reshape(-1) == idx).sum()
            out["valid"] = gt.sum()
        return out

    def _preds_post(self, rec: _Rec, vals: dict) -> dict:
        f = rec.fields
        hist = [int(x) for x in vals["hist"]]
        f["hist"] = hist
        f["unique"] = sum(1 for x in hist if x > 0)
        f["value_range"] = None
        f["channel_sum_dev"] = None
        if "prob" in vals:
            mn, mx, dev = vals["prob"]
            if math.isfinite(mn) and math.isfinite(mx):
                f["value_range"] = [mn, mx]
            f["channel_sum_dev"] = dev if math.isfinite(dev) else None
        if "gt_hist" in vals:
            f["gt_hist"] = [int(x) for x in vals["gt_hist"]]
            f["correct"] = int(vals["correct"][0])
            f["valid"] = int(vals["valid"][0])
        else:
            f["gt_hist"] = None
            f["correct"] = None
            f["valid"] = None
        return f
