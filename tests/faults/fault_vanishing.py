"""Fault: a loss weight typo, ``loss_weight: 1e-12`` where 1e-2 was meant (the
auxiliary-loss weight line was copied onto the main loss).  With plain SGD the updates
are ~1e-12 of what they should be: the total gradient norm is far below 1e-7 and the
model never moves.

Expected finding: grad.vanishing.  FAULT_STEP = 0.
"""
import torch
import torch.nn as nn

from _synth import TinySegNet, evaluate, loaders, seed_all

FAULT_STEP = 0
NUM_CLASSES = 13
CFG = {"lr": 0.05, "momentum": 0.9, "loss_weight": 1e-12}  # BUG: 1e-12 instead of 1.0

seed_all(0)
train_loader, val_loader = loaders(NUM_CLASSES)
model = TinySegNet(4, NUM_CLASSES)
criterion = nn.CrossEntropyLoss(ignore_index=-1)
optimizer = torch.optim.SGD(model.parameters(), lr=CFG["lr"], momentum=CFG["momentum"])
it = 0
for epoch in range(1, 6):
    model.train()
    for rgb, depth, label in train_loader:
        it += 1
        loss = CFG["loss_weight"] * criterion(model(torch.cat([rgb, depth], 1)), label)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if it % 10 == 0:
            print(f"iter {it} loss {loss.item():.4e}", flush=True)
    print(f"epoch {epoch}: mIoU: {evaluate(model, val_loader, NUM_CLASSES):.2f}", flush=True)
