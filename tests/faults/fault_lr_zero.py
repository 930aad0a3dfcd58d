"""Fault: the optimizer reads ``cfg.get("lr", 0.0)`` but the training YAML spells the key
``learning_rate``; the default 0.0 is used.  Everything runs, gradients are fine, the
optimizer steps with a zero learning rate and nothing changes.

Expected finding: optim.lr_suspicious.  FAULT_STEP = 0.
"""
import torch
import torch.nn as nn

from _synth import TinySegNet, evaluate, loaders, seed_all

FAULT_STEP = 0
NUM_CLASSES = 13
CFG = {"optimizer": "AdamW", "learning_rate": 8e-3, "weight_decay": 0.01}  # parsed from train.yaml

seed_all(0)
train_loader, val_loader = loaders(NUM_CLASSES)
model = TinySegNet(4, NUM_CLASSES)
criterion = nn.CrossEntropyLoss(ignore_index=-1)
optimizer = torch.optim.AdamW(model.parameters(), lr=CFG.get("lr", 0.0),  # BUG: key is "learning_rate"
                              weight_decay=CFG["weight_decay"])
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
            print(f"iter {it} lr {optimizer.param_groups[0]['lr']} loss {loss.item():.4f}", flush=True)
    print(f"epoch {epoch}: mIoU: {evaluate(model, val_loader, NUM_CLASSES):.2f}", flush=True)
