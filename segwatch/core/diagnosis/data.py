"""Input rules (guide problem 3): non-finite inputs and un-normalized images."""
from __future__ import annotations

from .base import Rule, ffloat, finite, fint, r4

#: a normalized input (mean/std of ImageNet or [0,1]) stays within a few units; raw 8-bit
#: images have max ~255 and mean ~100; metric depth in mm has max in the thousands.
MAX_ABS = 20.0
MAX_MEAN = 10.0
_LABEL_WORDS = ("label", "gt", "mask", "seg", "target", "ann")


def _label_like(inp: dict) -> bool:
    key = str(inp.get("key") or "").lower()
    dtype = str(inp.get("dtype") or "").lower()
    if any(w in key for w in _LABEL_WORDS):
        return True
    return not ("float" in dtype or "half" in dtype or "double" in dtype)


class DataNonfinite(Rule):
    id = "data.nonfinite"
    events = ("batch",)

    def check(self, state, ev):
        bad = []
        inputs = ev.get("inputs")
        for inp in inputs if isinstance(inputs, list) else ():
            if isinstance(inp, dict) and (fint(inp.get("nonfinite")) or 0) > 0:
                bad.append({"key": inp.get("key"), "nonfinite": fint(inp.get("nonfinite")),
                            "shape": inp.get("shape"), "dtype": inp.get("dtype")})
        if not bad:
            return None
        return self.make(state, ev, {"inputs": bad, "key": bad[0]["key"]})


class DataNotNormalized(Rule):
    id = "data.not_normalized"
    events = ("batch",)

    def check(self, state, ev):
        bad = []
        inputs = ev.get("inputs")
        for inp in inputs if isinstance(inputs, list) else ():
            if not isinstance(inp, dict) or _label_like(inp):
                continue
            mx, mn, mean = ffloat(inp.get("max")), ffloat(inp.get("min")), ffloat(inp.get("mean"))
            big = max(abs(x) for x in (mx, mn) if finite(x)) if any(finite(x) for x in (mx, mn)) else None
            if (big is not None and big > MAX_ABS) or (finite(mean) and abs(mean) > MAX_MEAN):
                bad.append({"key": inp.get("key"), "min": r4(mn), "max": r4(mx), "mean": r4(mean),
                            "std": r4(ffloat(inp.get("std"))), "dtype": inp.get("dtype")})
        if not bad:
            return None
        return self.make(state, ev, {"inputs": bad, "key": bad[0]["key"],
                                     "limits": {"abs_max": MAX_ABS, "abs_mean": MAX_MEAN}})
