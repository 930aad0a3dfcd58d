"""Shared pieces of the late fault zoo: the early zoo's synthetic RGB-D task
(``tests/faults/_synth.py``), a fixed schedule (600 optimizer steps, an evaluation every
50) and ``--healthy``, which turns a fault script into its healthy twin.

Plain PyTorch + numpy; knows nothing about segwatch.  The scripts import this module
through ``sys.path[0]`` (their own directory); it finds ``_synth`` next door.
"""
from __future__ import annotations

import os
import sys

import torch

sys.path.insert(1, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "faults"))

from _synth import (  # noqa: E402  (the early zoo's task, reused as is)
    SUNRGBD_CLASSES, SynthRGBD, TinySegNet, fast_hist, loaders, miou_from_hist, seed_all,
)

__all__ = ["SUNRGBD_CLASSES", "SynthRGBD", "TinySegNet", "fast_hist", "loaders", "miou_from_hist",
           "seed_all", "BATCH", "WIDTH", "TOTAL_STEPS", "EVAL_EVERY", "NUM_CLASSES", "HEALTHY", "endless", "validate",
           "log_step", "log_miou"]

TOTAL_STEPS = 600
EVAL_EVERY = 50
NUM_CLASSES = 13
BATCH = 4   # small batches and a narrow net keep 600 steps at a few seconds on a loaded CPU
WIDTH = 16

# `python script.py --healthy` runs the same training without its bug (the healthy twin)
HEALTHY = "--healthy" in sys.argv[1:]


def endless(loader):
    """``(epoch, batch)`` for ever, one pass over the loader per epoch, as an
    iteration-based training loop reads its data."""
    epoch = 0
    while True:
        epoch += 1
        for batch in loader:
            yield epoch, batch


@torch.no_grad()
def validate(model, loader, num_classes: int = NUM_CLASSES, ignore_index: int = -1,
             restore_train: bool = True) -> float:
    """Whole-loader evaluation of ``(rgb, depth, label)`` batches; mIoU in percent
    (the guide's convention: IoU NaN -> 0, mean over all classes)."""
    model.eval()
    hist = torch.zeros(num_classes, num_classes, dtype=torch.int64)
    for rgb, depth, label in loader:
        pred = model(torch.cat([rgb, depth], 1)).argmax(1)
        hist += fast_hist(pred, label, num_classes, ignore_index)
    if restore_train:
        model.train()
    return miou_from_hist(hist)


def log_step(step: int, loss, optimizer, every: int = 25) -> None:
    if step % every == 0:
        lr = optimizer.param_groups[0]["lr"]
        print(f"iter {step}/{TOTAL_STEPS} lr {lr:.3e} loss {float(loss):.4f}", flush=True)


def log_miou(step: int, miou: float) -> None:
    print(f"iter {step}/{TOTAL_STEPS} mIoU: {miou:.2f}", flush=True)
