"""The ``batch`` probe: per-input statistics (mean/std/min/max, non-finite count), the label
histogram and its oddities (out of range, fractional, boundary share), image/label alignment.
Device side: ``_batch_record`` (on a sampled training batch, every evaluation batch); host side:
``_batch_post`` (after the read-back). Its cost is the ``batch`` entry of the sampler."""
from __future__ import annotations

import math
from typing import Any

import torch

from .. import stats as S
from ..common import _Batch, _num, _OneThread, _Rec


class BatchProbe:
    """Methods of ``Shim`` (segwatch.shim.runtime); the state lives on the Shim."""

    def _batch_record(self, b: _Batch) -> _Rec | None:
        try:
            self._inject("batch")
            fields: dict[str, Any] = {"phase": b.phase, "loader": b.loader.num, "index": b.index,
                                      "length": b.loader.length, "epoch": self.epoch, "labels": None,
                                      "inputs": [], "image_shape": None, "align": None, "align_flipped": None}
            dev: dict[str, torch.Tensor] = {}
            with torch.no_grad(), _OneThread():
                for i, (key, x) in enumerate(b.images[:8]):
                    fields["inputs"].append({"key": key, "shape": list(x.shape), "dtype": str(x.dtype).replace("torch.", "")})
                    dev[f"in{i}"] = S.input_stats(x)
                if b.images:
                    fields["image_shape"] = list(b.images[0][1].shape[-2:])
                deferred = None
                if b.label is not None:
                    key, lab = b.label
                    lab2 = S.squeeze_label(lab)
                    fields["labels"] = {"key": key, "shape": list(lab.shape), "dtype": str(lab.dtype).replace("torch.", ""),
                                        "total": lab2.numel(), "ignore_value": self.ignore}
                    if self.num_classes is not None:
                        self._label_dev(lab, dev, fields)
                    else:
                        deferred = lab  # statistics once the class count is known (read-back)
                    if b.images and b.images[0][1].shape[0] == lab.shape[0] and lab2.numel():
                        img = b.images[0][1]
                        # on CPU the input statistics already say whether it is all finite
                        finite = img.device.type == "cpu" and float(dev["in0"][4]) == 0
                        dev["align"] = S.align_sums(img, lab, finite=finite)
            post = self._batch_post
            rec = _Rec("batch", self.step, fields, dev, post)
            if deferred is not None:
                rec.fields["_deferred"] = deferred
            return rec
        except Exception as exc:
            self._fail("batch", exc)
            return None

    def _label_dev(self, lab: torch.Tensor, dev: dict, fields: dict) -> None:
        st = S.label_stats(lab, self.num_classes, self.ignore)
        for k, v in st.items():
            dev["lab_" + k] = v
        fields["labels"]["num_classes"] = self.num_classes
        if lab.device.type == "cpu":
            # reading a CPU count is free; the per-value breakdown only when there is one
            fields["labels"]["oor"] = (S.host_oor_values(lab, self.num_classes, self.ignore)
                                       if int(st["oor_total"]) > 0 else {})
        elif self._oor_refs < 16:
            # unique() at read-back (a sync is allowed there); a few references at most
            self._oor_refs += 1
            fields["labels"]["_oor_src"] = lab

    def _batch_post(self, rec: _Rec, vals: dict[str, list[float]]) -> dict:
        f = rec.fields
        for i, inp in enumerate(f["inputs"]):
            v = vals.get(f"in{i}")
            if v:
                inp.update(mean=v[0], std=v[1], min=v[2], max=v[3], nonfinite=int(v[4]))
                if not math.isfinite(v[2]):
                    inp["min"] = None
                if not math.isfinite(v[3]):
                    inp["max"] = None
        lab = f.get("labels")
        if lab is not None and "lab_hist" in vals:
            src = lab.pop("_oor_src", None)
            if src is not None:
                self._oor_refs = max(0, self._oor_refs - 1)
            lab.update(min=_num(vals["lab_min"][0]), max=_num(vals["lab_max"][0]),
                       ignore=int(vals["lab_ignore"][0]), hist=[int(x) for x in vals["lab_hist"]],
                       fractional=int(vals["lab_fractional"][0]), boundary=round(vals["lab_boundary"][0], 6),
                       oor_total=int(vals["lab_oor_total"][0]))
            if "oor" not in lab:
                lab["oor"] = (S.host_oor_values(src, lab["num_classes"], self.ignore)
                              if src is not None and lab["oor_total"] > 0 else {})
        elif lab is not None:
            lab.update(min=None, max=None, ignore=None, hist=None, oor={}, fractional=0, boundary=None, oor_total=None)
        if "align" in vals:
            f["align"], f["align_flipped"] = S.align_from_sums(vals["align"])
        return f
