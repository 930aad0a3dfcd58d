"""Fault: the optimizer was switched from AdamW to SGD and the AdamW learning rate
(8e-5, the DFormer default) was kept.  Plain SGD at 8e-5 barely moves a freshly
initialised network: the loss sits at its starting value for the whole run.

Expected finding: loss.plateau.  FAULT_STEP = 0.
"""
import torch
import torch.nn as nn

from _synth import TinySegNet, evaluate, loaders, seed_all

FAULT_STEP = 0
NUM_CLASSES = 13
LR = 8e-5  # BUG: an AdamW learning rate, given to SGD without momentum

seed_all(0)
train_loader, val_loader = loaders(NUM_CLASSES)
model = TinySegNet(4, NUM_CLASSES)
criterion = nn.CrossEntropyLoss(ignore_index=-1)
optimizer = torch.optim.SGD(model.parameters(), lr=LR)
it = 0
for epoch in range(1, 6):
    model.train()
    for rgb, depth, label in train_loader:
        it += 1
        loss = criterion(model(torch.cat([rgb, depth], 1)), label)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if it % 10 == 0:
            print(f"iter {it} loss {loss.item():.4f}", flush=True)
    print(f"epoch {epoch}: mIoU: {evaluate(model, val_loader, NUM_CLASSES):.2f}", flush=True)
