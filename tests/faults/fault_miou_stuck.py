"""Fault: evaluation runs on an EMA copy of the model, and the EMA update rebinds a
local name instead of writing into the EMA tensors (``e = e * d + p * (1 - d)``), so the
EMA model keeps its initial weights forever.  Every evaluation scores the same frozen
network: the printed mIoU is identical epoch after epoch while the loss falls.

Expected finding: metric.miou_stuck.  FAULT_STEP = 20 (the first evaluation; the
third identical one is at step 60).
"""
import copy

import torch
import torch.nn as nn

from _synth import TinySegNet, evaluate, loaders, seed_all

FAULT_STEP = 20
NUM_CLASSES = 13


class ModelEMA:
    def __init__(self, model, decay=0.99):
        self.ema = copy.deepcopy(model).eval()
        self.decay = decay
        for p in self.ema.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model):
        d = self.decay
        for e, p in zip(self.ema.state_dict().values(), model.state_dict().values()):
            if e.dtype.is_floating_point:
                e = e * d + p.detach() * (1 - d)  # BUG: rebinding; should be e.mul_(d).add_(p, alpha=1 - d)


seed_all(0)
train_loader, val_loader = loaders(NUM_CLASSES)
model = TinySegNet(4, NUM_CLASSES)
ema = ModelEMA(model)
criterion = nn.CrossEntropyLoss(ignore_index=-1)
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
it = 0
for epoch in range(1, 6):
    model.train()
    for rgb, depth, label in train_loader:
        it += 1
        loss = criterion(model(torch.cat([rgb, depth], 1)), label)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        ema.update(model)
        if it % 10 == 0:
            print(f"iter {it} loss {loss.item():.4f}", flush=True)
    print(f"epoch {epoch}: mIoU: {evaluate(ema.ema, val_loader, NUM_CLASSES):.2f}", flush=True)
