"""Fault: validation ignores pixels without a depth reading, ``depth < MIN_DEPTH_MM``,
but the validation depth is already normalized (values around -2..2), not millimetres:
every validation pixel counts as "no depth" and is set to ignore.  Training is fine;
every evaluation counts zero pixels and prints mIoU 0.00.

Expected finding: metric.cm_empty.  FAULT_STEP = 20 (the first evaluation, after epoch 1).
"""
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset

from _synth import SynthRGBD, TinySegNet, evaluate, loaders, seed_all

FAULT_STEP = 20
NUM_CLASSES = 13
IGNORE = -1
MIN_DEPTH_MM = 100  # sensor minimum range


class ValSplit(Dataset):
    def __init__(self):
        self.base = SynthRGBD(32, num_classes=NUM_CLASSES, seed=1000)  # normalized rgb and depth

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        rgb, depth, gt = self.base[i]
        no_depth = depth[0] < MIN_DEPTH_MM  # BUG: depth was normalized, it is not in mm
        gt = gt.masked_fill(no_depth, IGNORE)
        return rgb, depth, gt


seed_all(0)
train_loader, _ = loaders(NUM_CLASSES)
val_loader = DataLoader(ValSplit(), batch_size=8)
model = TinySegNet(4, NUM_CLASSES)
criterion = nn.CrossEntropyLoss(ignore_index=IGNORE)
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
    print(f"epoch {epoch}: mIoU: {evaluate(model, val_loader, NUM_CLASSES, IGNORE):.2f}", flush=True)
