"""The diagnosis rules: one small class per finding id (DESIGN.md "Finding ids").

``build_rules()`` returns fresh instances in a fixed order (rule order is part of the
determinism contract: the same events always raise the same findings in the same order).
"""
from __future__ import annotations

from .base import Rule
from .data import DataNonfinite, DataNotNormalized
from .dist import DistRankDivergence, DistRankSilent, DistSameBatches
from .labels import (LabelAllIgnored, LabelClassImbalance, LabelIgnoreMismatch, LabelInterpolated,
                     LabelMisaligned, LabelOutOfRange, LabelShapeMismatch)
from .metric import (MetricCmEmpty, MetricEvalAborted, MetricMiouStuck, MetricScriptDisagrees,
                     MetricSingleClassSignature)
from .preds import PredCollapse, PredLowDiversity
from .training import (ConfigNumClassesMismatch, GradExploding, GradNonfinite, GradVanishing,
                       LossDiverging, LossNonfinite, LossPlateau, ModelEvalModeInTraining,
                       ModelFrozen, ModelPretrainedNotLoaded, OptimLrSuspicious,
                       OptimParamsNotStepped, OptimStepsSkipped)

RULE_CLASSES: tuple[type[Rule], ...] = (
    ConfigNumClassesMismatch,
    ModelPretrainedNotLoaded,
    ModelFrozen,
    DataNonfinite,
    DataNotNormalized,
    LabelOutOfRange,
    LabelIgnoreMismatch,
    LabelAllIgnored,
    LabelShapeMismatch,
    LabelInterpolated,
    LabelMisaligned,
    LabelClassImbalance,
    LossNonfinite,
    LossPlateau,
    LossDiverging,
    GradNonfinite,
    GradVanishing,
    GradExploding,
    OptimLrSuspicious,
    OptimParamsNotStepped,
    OptimStepsSkipped,
    ModelEvalModeInTraining,
    MetricSingleClassSignature,   # before PredCollapse, which reads its script-side verdict
    PredCollapse,
    PredLowDiversity,
    MetricEvalAborted,
    MetricCmEmpty,
    MetricMiouStuck,
    MetricScriptDisagrees,
    DistRankDivergence,
    DistSameBatches,
    DistRankSilent,
)


def build_rules() -> list[Rule]:
    return [cls() for cls in RULE_CLASSES]


__all__ = ["Rule", "RULE_CLASSES", "build_rules"]
