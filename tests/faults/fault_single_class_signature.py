"""Fault: the linear warm-up divides by ``warmup_ratio`` instead of multiplying
(``warmup_lr = base_lr / warmup_ratio``), so the first iterations run at 1000x the base
learning rate.  The ReLU features die within a few steps and never come back: from the
second evaluation on, the network predicts the most frequent class (wall) everywhere.
This is the guide's "mIoU fixed at 2.7%" (problem 1) on 37 SUNRGBD-like classes: the
printed mIoU equals wall's IoU / 37, the same value at every evaluation.

Expected finding: metric.single_class_signature.  FAULT_STEP = 40 (the second evaluation;
the first, at step 20, still sees a few classes).
"""
import torch
import torch.nn as nn

from _synth import TinySegNet, evaluate, loaders, seed_all

FAULT_STEP = 40
NUM_CLASSES = 37
BASE_LR = 1e-2
WARMUP_ITERS = 40
WARMUP_RATIO = 1e-3


def lr_at(it):
    if it < WARMUP_ITERS:
        k = (1 - it / WARMUP_ITERS) * (1 - 1 / WARMUP_RATIO)  # BUG: should be (1 - WARMUP_RATIO)
        return BASE_LR * (1 - k)
    return BASE_LR


seed_all(0)
train_loader, val_loader = loaders(NUM_CLASSES)
model = TinySegNet(4, NUM_CLASSES, width=32)
criterion = nn.CrossEntropyLoss(ignore_index=-1)
optimizer = torch.optim.SGD(model.parameters(), lr=BASE_LR, momentum=0.9, weight_decay=5e-4)
it = 0
for epoch in range(1, 6):
    model.train()
    for rgb, depth, label in train_loader:
        for g in optimizer.param_groups:
            g["lr"] = lr_at(it)
        it += 1
        logits = model(torch.cat([rgb, depth], 1))
        loss = criterion(logits, label)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if it % 10 == 0:
            print(f"iter {it} lr {optimizer.param_groups[0]['lr']:.4f} loss {loss.item():.4f}", flush=True)
    print(f"epoch {epoch}: mIoU: {evaluate(model, val_loader, NUM_CLASSES):.2f}", flush=True)
