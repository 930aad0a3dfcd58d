"""Fault: the pretrained checkpoint was saved from a DataParallel/DDP wrapper, so every
key starts with ``module.``; it is loaded with ``strict=False`` "because the head
differs", which silently loads nothing: every key is missing and every checkpoint key
is unexpected.  Training starts from random weights without a word.

Expected finding: model.pretrained_not_loaded.  FAULT_STEP = 0.
"""
import os
import tempfile

import torch
import torch.nn as nn

from _synth import TinySegNet, evaluate, loaders, seed_all

FAULT_STEP = 0
NUM_CLASSES = 13


def make_pretrained_checkpoint(path):
    """Stands in for the downloaded ImageNet/pretraining checkpoint (saved under DDP)."""
    torch.manual_seed(123)
    backbone = TinySegNet(4, NUM_CLASSES)
    torch.save({"state_dict": {"module." + k: v for k, v in backbone.state_dict().items()}}, path)


seed_all(0)
ckpt_path = os.path.join(tempfile.mkdtemp(prefix="segwatch_fault_"), "pretrained.pth")
make_pretrained_checkpoint(ckpt_path)
train_loader, val_loader = loaders(NUM_CLASSES)
model = TinySegNet(4, NUM_CLASSES)
state = torch.load(ckpt_path, map_location="cpu")["state_dict"]
msg = model.load_state_dict(state, strict=False)  # BUG: keys carry "module." -> nothing loads
print(f"loaded pretrained weights from {ckpt_path}", flush=True)
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
            print(f"iter {it} loss {loss.item():.4f}", flush=True)
    print(f"epoch {epoch}: mIoU: {evaluate(model, val_loader, NUM_CLASSES):.2f}", flush=True)
os.remove(ckpt_path)
os.rmdir(os.path.dirname(ckpt_path))
