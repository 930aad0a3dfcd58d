"""Fault: ``validate()`` switches the model to eval mode and the training loop never
switches it back (``model.train()`` is called once, before the loop).  From the first
evaluation on, BatchNorm uses its running statistics and Dropout is off during training:
backward runs with the network in eval mode.

Expected finding: model.eval_mode_in_training.  FAULT_STEP = 20 (after the first evaluation).
"""
import torch
import torch.nn as nn

from _synth import TinySegNet, fast_hist, loaders, miou_from_hist, seed_all

FAULT_STEP = 20
NUM_CLASSES = 13


@torch.no_grad()
def validate(model, loader):
    model.eval()
    hist = torch.zeros(NUM_CLASSES, NUM_CLASSES, dtype=torch.long)
    for rgb, depth, label in loader:
        hist += fast_hist(model(torch.cat([rgb, depth], 1)).argmax(1), label, NUM_CLASSES)
    return miou_from_hist(hist)  # BUG: no model.train() here (nor in the loop)


seed_all(0)
train_loader, val_loader = loaders(NUM_CLASSES)
model = TinySegNet(4, NUM_CLASSES)
criterion = nn.CrossEntropyLoss(ignore_index=-1)
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
model.train()
it = 0
for epoch in range(1, 6):
    for rgb, depth, label in train_loader:
        it += 1
        loss = criterion(model(torch.cat([rgb, depth], 1)), label)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if it % 10 == 0:
            print(f"iter {it} loss {loss.item():.4f}", flush=True)
    print(f"epoch {epoch}: mIoU: {validate(model, val_loader):.2f}", flush=True)
