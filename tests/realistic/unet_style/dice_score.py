"""Dice coefficient and loss over one-hot masks (N, C, H, W), as Pytorch-UNet's
``utils/dice_score.py`` uses them: the score per image and class, averaged."""
import torch


def dice_coeff(pred, target, eps=1e-6):
    """Mean Dice over the leading dimensions of two (..., H, W) masks; an empty pair
    scores 1."""
    inter = (pred * target).sum(dim=(-1, -2))
    total = pred.sum(dim=(-1, -2)) + target.sum(dim=(-1, -2))
    return ((2 * inter + eps) / (total + eps)).mean()


def multiclass_dice_coeff(pred, target, eps=1e-6):
    return dice_coeff(pred.flatten(0, 1), target.flatten(0, 1), eps)


def dice_loss(pred, target, multiclass=True):
    return 1 - (multiclass_dice_coeff(pred, target) if multiclass else dice_coeff(pred, target))
