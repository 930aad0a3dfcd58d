"""The diagnosis rules: one small class per finding id (DESIGN.md "Finding ids").

``build_rules()`` returns fresh instances in a fixed order (rule order is part of the
determinism contract: the same events always raise the same findings in the same order).
Each rule is O(1) per event (small private counters/windows). When they fire, in short
(thresholds from the config where it has them; the others are justified in each module):

=============================  ==========================================================
pred.collapse                  the top predicted class holds >= collapse_share (0.98) of the
                               pixels, stray classes (< 0.5 %) tolerated: training samples in
                               >= 3 consecutive samples over >= 5 steps (2 over 16 when sparse)
                               after grace_steps; any evaluation (after grace or loss not
                               falling fast); a run that ends collapsed at bye, grace or not;
                               the printed mIoU = p_c/C only without own matrices (preds.py)
pred.low_diversity             eval: 2..k-1 predicted classes while labels hold >= k, after
                               grace (one eval forgiven while the loss falls fast); train:
                               >= 5 samples over >= 10 steps after grace, loss stopped falling
metric.cm_empty                eval matrix sums to 0; or null while logits were seen; or no
                               validation label of the pass is countable
metric.miou_stuck              miou_stuck_evals evaluations (distinct steps) with |delta| < 1e-9,
                               from own matrices or from the script's printed values
metric.single_class_signature  one predicted class and mIoU == 100 * p_c / C (rel 1e-6); or
                               the printed mIoU equals 100 * p_c / C (val labels) twice
metric.miou_regressed         an evaluation's mIoU < 0.5 x the best earlier one (best >= 5
                               points); from the script's printed values only without matrices
metric.script_disagrees        script mIoU vs own eval of the same step: > 0.5 points off in
                               both conventions (guide and mmseg; fractions accepted)
metric.eval_aborted            eval event with aborted: true
label.out_of_range             oor values other than the (configured / auto-inferred) ignore
label.ignore_mismatch          the data's ignore-like value (< 0, >= 255 or >= 2C, most
                               pixels) differs from the configured int ignore_index
label.all_ignored              a batch whose pixels are all ignore (any phase)
label.shape_mismatch           label H, W != image_shape; eval size_mismatch > 0
label.interpolated             fractional > 0; boundary >= 1.5 in-between pixels per row in a
                               batch, or a mean >= 0.4 per row over >= 3 batches
label.misaligned               mirrored label fits better: >= 80 % of recent batches (error),
                               >= 30 % of the last 16 vs validation (+0.25); train align far
                               below val align
label.class_imbalance          one class >= 90 % of labelled training pixels after >= 5 batches
config.num_classes_mismatch    model out_channels / preds channels != configured num_classes
loss.nonfinite                 a NaN/Inf loss or loss_nonfinite_total > 0 (immediately)
loss.plateau                   first window: mean(last quarter) >= 0.98 x mean(first quarter)
                               (< 1.25x), >= 8 samples over >= 30 steps
loss.diverging                 4 rising 10-sample windows and > 1.5x the lowest level (after 8
                               earlier windows instead: the last 3 above their median + 6x their
                               spread); or 3 rising samples > 3x the lowest; or one sample > 100x
                               lowest, 10x first
loss.ignore_index_mismatch     the target given to the loss holds values outside 0..C-1 that are
                               not its ignore_index (seen by the shim before the call; lossfn.py)
grad.vanishing                 grad_norm < grad_norm_min in 3 consecutive samples (not when
                               nothing got a gradient)
grad.exploding                 grad_norm > grad_norm_max in 2 consecutive samples
grad.nonfinite                 grad_nonfinite > 0 (3 consecutive samples under AMP)
optim.lr_suspicious            a group at lr 0 for 3 samples; lr > 10x expected_lr twice;
                               max lr < expected_lr / 10 after 10 samples and not ramping up
optim.params_not_stepped       no_optim > 0 twice; never_stepped > 0 3 times while stepping
                               (gradients whose update lr*|g| shows in float only);
                               backward runs but no tracked parameter gets a gradient 3 times
optim.steps_skipped            >= 80 % of >= 5 backward passes without a step plus AMP signs;
                               or no step at all over >= 16 backward passes
model.eval_mode_in_training    eval_modules > 0 in 2 consecutive samples (error if all)
model.pretrained_not_loaded    a state_dict event with loaded / total < 0.5
model.frozen                   trainable < 10 % of params; or > 75 % of parameter tensors
                               without gradient (some with) in 3 consecutive samples
optim.grads_accumulate         grad_before_backward > 0 at the first backward after a step, on
                               >= 3 of the last <= 8 measured steps (>= 80 %)
optim.lr_schedule              LR < 1e-3 x peak for >= 100 steps and >= 5 % of the run before;
                               StepLR/MultiStepLR/ExponentialLR stepped per optimizer step with
                               LR <= 1e-2 x peak early; lr_applied at steps 1-3: peak, < 0.1x,
                               rising (LR set after step())
model.output_is_probability    training preds: value_range in [0, 1] and channel_sum_dev < 1e-3
                               on 3 consecutive samples
label.single_value             the last 4 sampled training batches hold <= 2 label values
                               together while validation labels hold >= max(4, 2n + 2) classes
label.last_class_missing       reduce_zero_label (config or mmseg dataset) and class C-1 absent from the
                               training and validation labels after >= 20 batches, >= 90 % of the
                               others present: 0-based labels shifted once more (labelshift.py)
data.nonfinite                 any input with nonfinite > 0
data.not_normalized            a float, non-label input with |min|/|max| > 20 or |mean| > 10
resource.* / perf.data_bound  see resources.py (CUDA memory growth, CUDA OOM in the output,
                               > 30 % of wall time waiting for batches)
dist.*                         grad norms differ > 5 % across ranks (3 steps); identical
                               batches on all ranks (3 times); a rank silent > 120 s
=============================  ==========================================================
"""
from __future__ import annotations

from .base import Rule
from .data import DataNonfinite, DataNotNormalized
from .dist import DistRankDivergence, DistRankSilent, DistSameBatches
from .labels import (LabelAllIgnored, LabelClassImbalance, LabelIgnoreMismatch, LabelInterpolated,
                     LabelMisaligned, LabelOutOfRange, LabelShapeMismatch, LabelSingleValue)
from .metric import (MetricCmEmpty, MetricEvalAborted, MetricMiouRegressed, MetricMiouStuck,
                     MetricScriptDisagrees, MetricSingleClassSignature)
from .optim import OptimGradsAccumulate, OptimLrSchedule
from .lossfn import LossIgnoreIndexMismatch
from .labelshift import LabelLastClassMissing
from .outputs import ModelOutputIsProbability
from .preds import PredCollapse, PredLowDiversity
from .resources import PerfDataBound, ResourceCudaOom, ResourceMemoryGrowing
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
    LabelSingleValue,
    LabelLastClassMissing,
    LossIgnoreIndexMismatch,
    LossNonfinite,
    LossPlateau,
    LossDiverging,
    GradNonfinite,
    GradVanishing,
    GradExploding,
    OptimLrSuspicious,
    OptimParamsNotStepped,
    OptimStepsSkipped,
    OptimGradsAccumulate,
    OptimLrSchedule,
    ModelEvalModeInTraining,
    ModelOutputIsProbability,
    MetricSingleClassSignature,   # before PredCollapse, which reads its script-side verdict
    PredCollapse,
    PredLowDiversity,
    MetricEvalAborted,
    MetricCmEmpty,
    MetricMiouStuck,
    MetricMiouRegressed,
    MetricScriptDisagrees,
    DistRankDivergence,
    DistSameBatches,
    DistRankSilent,
    ResourceCudaOom,
    ResourceMemoryGrowing,
    PerfDataBound,
)


def build_rules() -> list[Rule]:
    return [cls() for cls in RULE_CLASSES]


__all__ = ["Rule", "RULE_CLASSES", "build_rules"]
