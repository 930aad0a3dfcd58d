"""Fault: an edge-smoothness regulariser computes the gradient magnitude of the
predicted probabilities as ``sqrt(dx**2 + dy**2)`` without an epsilon.  With replicate
padding both differences are exactly 0 at the bottom-right pixel (and anywhere the
probabilities are flat), where sqrt has an infinite derivative: the loss value is
finite but backward produces NaN gradients, and the optimizer step writes NaN into the
weights (from the next step on the loss is NaN too).

Expected finding: grad.nonfinite.  FAULT_STEP = 0 (the very first backward).
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from _synth import TinySegNet, evaluate, loaders, seed_all

FAULT_STEP = 0
NUM_CLASSES = 13


def edge_smoothness(logits):
    p = F.pad(logits.softmax(1), (0, 1, 0, 1), mode="replicate")
    dx = p[..., :-1, 1:] - p[..., :-1, :-1]
    dy = p[..., 1:, :-1] - p[..., :-1, :-1]
    return torch.sqrt(dx ** 2 + dy ** 2).mean()  # BUG: needs + eps inside the sqrt


seed_all(0)
train_loader, val_loader = loaders(NUM_CLASSES)
model = TinySegNet(4, NUM_CLASSES)
criterion = nn.CrossEntropyLoss(ignore_index=-1)
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
it = 0
for epoch in range(1, 6):
    model.train()
    for rgb, depth, label in train_loader:
        it += 1
        logits = model(torch.cat([rgb, depth], 1))
        loss = criterion(logits, label) + 0.1 * edge_smoothness(logits)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if it % 10 == 0 or it <= 2:
            print(f"iter {it} loss {loss.item():.4f}", flush=True)
    print(f"epoch {epoch}: mIoU: {evaluate(model, val_loader, NUM_CLASSES):.2f}", flush=True)
