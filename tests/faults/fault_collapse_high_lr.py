"""Fault: learning rate far too high (10.0 with SGD+momentum, someone meant 1e-2).
The first updates blow the ReLU features away, every pixel ends up with the same logits
and the model predicts a single class for the rest of the run; the loss settles near
the entropy of the class prior instead of falling.

Expected finding: pred.collapse (after the grace window).  FAULT_STEP = 0.
"""
import torch
import torch.nn as nn

from _synth import TinySegNet, evaluate, loaders, seed_all

FAULT_STEP = 0
NUM_CLASSES = 13

seed_all(0)
train_loader, val_loader = loaders(NUM_CLASSES)
model = TinySegNet(4, NUM_CLASSES)
criterion = nn.CrossEntropyLoss(ignore_index=-1)
optimizer = torch.optim.SGD(model.parameters(), lr=10.0, momentum=0.9)  # BUG: meant 1e-2
it = 0
for epoch in range(1, 6):
    model.train()
    for rgb, depth, label in train_loader:
        it += 1
        logits = model(torch.cat([rgb, depth], 1))
        loss = criterion(logits, label)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if it % 10 == 0:
            print(f"iter {it} loss {loss.item():.4f} classes predicted {logits.argmax(1).unique().numel()}", flush=True)
    print(f"epoch {epoch}: mIoU: {evaluate(model, val_loader, NUM_CLASSES):.2f}", flush=True)
