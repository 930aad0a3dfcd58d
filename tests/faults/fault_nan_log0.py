"""Fault: an auxiliary depth-aware term in a custom loss weights each pixel by
``log(depth_mm)`` to emphasise far (small, hard) objects.  Depth maps have holes stored as 0
(no sensor return): ``log(0) = -inf``, and the first batch that holds a hole makes
the loss NaN; the optimizer then writes NaN into every weight.

Expected finding: loss.nonfinite.  FAULT_STEP = 0 (holes appear in the first batches).
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from _synth import MEAN, STD, SynthRGBD, TinySegNet, evaluate, seed_all

FAULT_STEP = 0
NUM_CLASSES = 13


class WithHoles(Dataset):
    """Depth in millimetres for the loss, normalized depth for the network."""

    def __init__(self, n, seed):
        self.base = SynthRGBD(n, num_classes=NUM_CLASSES, seed=seed, normalize=False)
        g = torch.Generator().manual_seed(seed)
        self.holes = [torch.rand(1, 32, 32, generator=g) < 0.01 for _ in range(n)]

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        rgb, depth, gt = self.base[i]
        depth_mm = (depth * 8000 + 500).masked_fill(self.holes[i], 0.0)  # 0 = no reading
        return (rgb - MEAN) / STD, (depth_mm / 8000 - MEAN) / STD, gt, depth_mm


def depth_weighted_ce(logits, label, depth_mm):
    ce = F.cross_entropy(logits, label, ignore_index=-1, reduction="none")
    w = torch.log(depth_mm[:, 0]) / math.log(8500.0)  # BUG: log(0) at depth holes -> -inf
    valid = (label != -1).float()
    return (ce * w * valid).sum() / valid.sum().clamp(min=1)


seed_all(0)
train_loader = DataLoader(WithHoles(160, 0), batch_size=8, shuffle=True, drop_last=True)
val_loader = DataLoader(WithHoles(32, 1000), batch_size=8,
                        collate_fn=lambda b: [torch.stack(t) for t in list(zip(*b))[:3]])
model = TinySegNet(4, NUM_CLASSES)
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
it = 0
for epoch in range(1, 6):
    model.train()
    for rgb, depth, label, depth_mm in train_loader:
        it += 1
        loss = depth_weighted_ce(model(torch.cat([rgb, depth], 1)), label, depth_mm)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if it % 10 == 0:
            print(f"iter {it} loss {loss.item():.4f}", flush=True)
    print(f"epoch {epoch}: mIoU: {evaluate(model, val_loader, NUM_CLASSES):.2f}", flush=True)
