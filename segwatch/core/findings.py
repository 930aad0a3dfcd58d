"""Findings: what the diagnosis rules raise.

A finding is raised once per id; later firings of the same rule update ``last_step``,
``count`` and ``evidence`` of the same object (see ``RunState``). ``to_dict`` gives the
report / wire form (DESIGN.md "Report"), with advice in the requested language.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

SEVERITIES = ("info", "warning", "error")
SEVERITY_RANK = {s: i for i, s in enumerate(SEVERITIES)}

#: Default severity of every finding id (DESIGN.md "Finding ids"). A rule may lower or
#: raise it for one firing (e.g. ``label.misaligned`` is an error when clear-cut).
SEVERITY: dict[str, str] = {
    "pred.collapse": "error",
    "pred.low_diversity": "warning",
    "metric.cm_empty": "error",
    "metric.miou_stuck": "warning",
    "metric.single_class_signature": "error",
    "metric.script_disagrees": "warning",
    "metric.eval_aborted": "error",
    "metric.miou_regressed": "error",
    "optim.grads_accumulate": "error",
    "optim.lr_schedule": "warning",
    "model.output_is_probability": "error",
    "label.single_value": "error",
    "label.out_of_range": "error",
    "label.ignore_mismatch": "error",
    "label.all_ignored": "error",
    "label.shape_mismatch": "error",
    "label.interpolated": "error",
    "label.misaligned": "warning",
    "label.class_imbalance": "warning",
    "label.last_class_missing": "warning",
    "config.num_classes_mismatch": "error",
    "loss.nonfinite": "error",
    "loss.ignore_index_mismatch": "error",
    "loss.plateau": "warning",
    "loss.diverging": "warning",
    "grad.vanishing": "error",
    "grad.exploding": "error",
    "grad.nonfinite": "error",
    "optim.lr_suspicious": "warning",
    "optim.params_not_stepped": "error",
    "optim.steps_skipped": "error",
    "model.eval_mode_in_training": "error",
    "model.pretrained_not_loaded": "error",
    "model.frozen": "error",
    "data.nonfinite": "error",
    "data.not_normalized": "warning",
    "dist.rank_divergence": "warning",
    "dist.same_batches": "warning",
    "dist.rank_silent": "error",
    "resource.memory_growing": "warning",
    "resource.cuda_oom": "error",
    "perf.data_bound": "warning",
}

FINDING_IDS = tuple(SEVERITY)


def jsonable(obj: Any) -> Any:
    """Plain-JSON copy of ``obj``: numpy scalars/arrays to Python, NaN/Inf to strings."""
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        if math.isfinite(f):
            return f
        return "nan" if math.isnan(f) else ("inf" if f > 0 else "-inf")
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if obj is None or isinstance(obj, str):
        return obj
    return str(obj)


@dataclass
class Finding:
    id: str
    severity: str
    first_step: int
    phase: str = "train"
    evidence: dict = field(default_factory=dict)
    last_step: int | None = None
    count: int = 1
    rank: int | None = None

    def __post_init__(self) -> None:
        if self.last_step is None:
            self.last_step = self.first_step

    def advice(self, lang: str = "en") -> str:
        """Concrete advice in ``lang`` ("en"/"zh"), ending with this run's values."""
        from .advice import advice_text

        return advice_text(self.id, lang, self.evidence)

    def title(self, lang: str = "en") -> str:
        from .advice import finding_title

        return finding_title(self.id, lang)

    def update(self, other: "Finding") -> None:
        """Merge a later firing of the same rule into this finding."""
        self.last_step = max(int(self.last_step or 0), int(other.first_step))
        self.count += 1
        self.evidence = other.evidence
        if SEVERITY_RANK.get(other.severity, 0) > SEVERITY_RANK.get(self.severity, 0):
            self.severity = other.severity

    def to_dict(self, lang: str = "en") -> dict:
        d = {
            "id": self.id,
            "severity": self.severity,
            "first_step": int(self.first_step),
            "last_step": int(self.last_step if self.last_step is not None else self.first_step),
            "count": int(self.count),
            "phase": self.phase,
            "evidence": jsonable(self.evidence),
            "title": self.title(lang),
            "advice": self.advice(lang),
        }
        if self.rank is not None:
            d["rank"] = int(self.rank)
        return d
