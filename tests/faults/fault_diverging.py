"""Fault: a hand-written linear-decay schedule, ``lr = base_lr * (1 - it / max_iter)``,
with ``max_iter = len(train_loader)`` (one epoch) instead of ``epochs * len(loader)``.
After the first epoch the learning rate goes negative and keeps growing in magnitude:
the optimizer climbs the loss (gradient ascent) and the loss rises steadily.

Expected finding: loss.diverging.  FAULT_STEP = 20 (the learning rate crosses zero).
"""
import torch
import torch.nn as nn

from _synth import TinySegNet, evaluate, loaders, seed_all

FAULT_STEP = 20
NUM_CLASSES = 13
BASE_LR = 0.02
EPOCHS = 5

seed_all(0)
train_loader, val_loader = loaders(NUM_CLASSES)
model = TinySegNet(4, NUM_CLASSES)
criterion = nn.CrossEntropyLoss(ignore_index=-1)
optimizer = torch.optim.SGD(model.parameters(), lr=BASE_LR, momentum=0.9, weight_decay=1e-4)
max_iter = len(train_loader)  # BUG: should be EPOCHS * len(train_loader)
it = 0
for epoch in range(1, EPOCHS + 1):
    model.train()
    for rgb, depth, label in train_loader:
        lr = BASE_LR * (1 - it / max_iter)
        for g in optimizer.param_groups:
            g["lr"] = lr
        it += 1
        loss = criterion(model(torch.cat([rgb, depth], 1)), label)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if it % 5 == 0:
            print(f"iter {it} lr {lr:.4f} loss {loss.item():.4f}", flush=True)
    print(f"epoch {epoch}: mIoU: {evaluate(model, val_loader, NUM_CLASSES):.2f}", flush=True)
