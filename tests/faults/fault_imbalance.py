"""Fault (data): the training crops were taken from wall-dominated views; one class
(wall) covers about 97% of the labelled pixels, the other 12 classes share the rest.
No class weighting, so the model learns "always wall" first and rare classes barely
move the loss.

Expected finding: label.class_imbalance.  FAULT_STEP = 0.
"""
import torch
import torch.nn as nn

from _synth import TinySegNet, evaluate, loaders, seed_all

FAULT_STEP = 0
NUM_CLASSES = 13

seed_all(0)
train_loader, val_loader = loaders(NUM_CLASSES, imbalance=0.97)
model = TinySegNet(4, NUM_CLASSES)
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
        if it % 10 == 0:
            share = (label == 0).sum().item() / (label >= 0).sum().item()
            print(f"iter {it} loss {loss.item():.4f} wall share {share:.3f}", flush=True)
    print(f"epoch {epoch}: mIoU: {evaluate(model, val_loader, NUM_CLASSES):.2f}", flush=True)
