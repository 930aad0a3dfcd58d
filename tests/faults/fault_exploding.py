"""Fault: the loss is summed over pixels (``reduction="sum"``, 8 x 32 x 32 = 8192
terms) instead of averaged, then the usual SGD learning rate is applied.  The total
gradient norm is in the thousands from the first step and the weights blow up.

Expected finding: grad.exploding.  FAULT_STEP = 0.
"""
import torch
import torch.nn as nn

from _synth import TinySegNet, evaluate, loaders, seed_all

FAULT_STEP = 0
NUM_CLASSES = 13

seed_all(0)
train_loader, val_loader = loaders(NUM_CLASSES)
model = TinySegNet(4, NUM_CLASSES)
criterion = nn.CrossEntropyLoss(ignore_index=-1, reduction="sum")  # BUG: should be "mean"
optimizer = torch.optim.SGD(model.parameters(), lr=1e-2, momentum=0.9)
it = 0
for epoch in range(1, 6):
    model.train()
    for rgb, depth, label in train_loader:
        it += 1
        loss = criterion(model(torch.cat([rgb, depth], 1)), label)
        optimizer.zero_grad()
        loss.backward()
        gn = torch.norm(torch.stack([p.grad.norm() for p in model.parameters() if p.grad is not None]))
        optimizer.step()
        if it % 10 == 0:
            print(f"iter {it} loss {loss.item():.1f} grad_norm {gn.item():.1f}", flush=True)
    print(f"epoch {epoch}: mIoU: {evaluate(model, val_loader, NUM_CLASSES):.2f}", flush=True)
