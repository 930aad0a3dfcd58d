"""TEST-ONLY stand-in for ``mmcv.ops`` (served by ``sitecustomize.py`` beside it).

mmsegmentation 1.2.2 names only a few ``mmcv.ops`` symbols.  The two used at import time or
by common configs are written here in pure PyTorch, after mmcv's definitions:

* ``point_sample(input, points, align_corners=False)``: ``grid_sample`` at points in [0, 1];
* ``sigmoid_focal_loss(pred, target, gamma, alpha, weight, reduction)``: mmcv's formula
  (``target`` holds class indices; ``weight`` per sample).

The compiled ops some heads instantiate (``PSAMask``, ``CrissCrossAttention``,
``DeformConv2d``...) are placeholders that raise a clear error when a config builds them.
"""
import torch
import torch.nn.functional as F


def _denormalize(points):
    return points * 2.0 - 1.0


def point_sample(input, points, align_corners=False, **kwargs):
    """mmcv.ops.point_sample: sample ``input`` [N, C, H, W] at ``points`` [N, P, 2] (or
    [N, Hg, Wg, 2]) given as (x, y) in [0, 1]; returns [N, C, P] (or [N, C, Hg, Wg])."""
    add_dim = False
    if points.dim() == 3:
        add_dim = True
        points = points.unsqueeze(2)
    out = F.grid_sample(input, _denormalize(points), align_corners=align_corners, **kwargs)
    if add_dim:
        out = out.squeeze(3)
    return out


def sigmoid_focal_loss(pred, target, gamma=2.0, alpha=0.25, weight=None, reduction="mean"):
    """mmcv.ops.sigmoid_focal_loss: ``pred`` [N, C] logits, ``target`` [N] class indices
    (an index >= C means background: all-zero target row)."""
    num_classes = pred.size(1)
    onehot = F.one_hot(target.clamp(0, num_classes).long(), num_classes + 1)[:, :num_classes]
    onehot = onehot.type_as(pred)
    p = pred.sigmoid()
    pt = (1 - p) * onehot + p * (1 - onehot)
    focal = (alpha * onehot + (1 - alpha) * (1 - onehot)) * pt.pow(gamma)
    loss = F.binary_cross_entropy_with_logits(pred, onehot, reduction="none") * focal
    if weight is not None:
        loss = loss * weight.view(-1, 1)
    if reduction == "mean":
        return loss.sum() / pred.size(0)   # mmcv's kernel divides by N
    if reduction == "sum":
        return loss.sum()
    return loss


def softmax_focal_loss(*args, **kwargs):
    raise NotImplementedError("mmcv.ops.softmax_focal_loss is not in the test stand-in")


def _placeholder(name):
    def __init__(self, *args, **kwargs):
        raise NotImplementedError(
            f"mmcv.ops.{name} needs mmcv's compiled ops (mmcv._ext); the test stand-in for "
            f"mmcv.ops (tests/mmcv_ops_standin) only provides point_sample and sigmoid_focal_loss")
    return type(name, (torch.nn.Module,), {"__init__": __init__})


_COMPILED = ("PSAMask", "CrissCrossAttention", "DeformConv2d", "ModulatedDeformConv2d",
             "DeformConv2dPack", "ModulatedDeformConv2dPack", "CARAFEPack", "RoIAlign", "nms")
for _name in _COMPILED:
    globals()[_name] = _placeholder(_name)

__all__ = ["point_sample", "sigmoid_focal_loss", "softmax_focal_loss", *_COMPILED]
