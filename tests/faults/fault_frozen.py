"""Fault: the backbone is frozen for a warm-up phase and should be unfrozen at
``UNFREEZE_EPOCH``, but the check compares against the 1-based epoch of a 0-based loop
over 5 epochs with UNFREEZE_EPOCH = 5, so it never fires.  Only the 1x1 classifier
(a few hundred of the ~11k parameters) ever receives a gradient; the model is stuck
with random features.

Expected finding: model.frozen.  FAULT_STEP = 0.
"""
import torch
import torch.nn as nn

from _synth import TinySegNet, evaluate, loaders, seed_all

FAULT_STEP = 0
NUM_CLASSES = 13
EPOCHS = 5
UNFREEZE_EPOCH = 5

seed_all(0)
train_loader, val_loader = loaders(NUM_CLASSES)
model = TinySegNet(4, NUM_CLASSES)
for p in model.backbone.parameters():
    p.requires_grad_(False)
criterion = nn.CrossEntropyLoss(ignore_index=-1)
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
it = 0
for epoch in range(EPOCHS):
    if epoch == UNFREEZE_EPOCH:  # BUG: epoch runs 0..4, never 5
        for p in model.backbone.parameters():
            p.requires_grad_(True)
    model.train()
    for rgb, depth, label in train_loader:
        it += 1
        loss = criterion(model(torch.cat([rgb, depth], 1)), label)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if it % 10 == 0:
            print(f"iter {it} loss {loss.item():.4f}", flush=True)
    print(f"epoch {epoch + 1}: mIoU: {evaluate(model, val_loader, NUM_CLASSES):.2f}", flush=True)
