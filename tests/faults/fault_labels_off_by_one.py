"""Fault: the label PNGs store 0 = unlabeled and 1..37 for the classes; the dataset
forgets the ``gt - 1`` shift, so labels run 0..37 for a 37-class model ("unlabeled"
becomes wall, every class is shifted by one and the rarest class becomes 37).
CrossEntropyLoss crashes with "Target 37 is out of bounds" as soon as a batch holds
class 37; segwatch must name the cause before that crash.

Expected finding: label.out_of_range.  FAULT_STEP = 0.
"""
import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset

from _synth import MEAN, STD, SynthRGBD, TinySegNet, evaluate, seed_all

FAULT_STEP = 0
NUM_CLASSES = 37


class SUNRGBD(Dataset):
    def __init__(self, split):
        self.files = SynthRGBD(160 if split == "train" else 32, num_classes=NUM_CLASSES,
                               seed=0 if split == "train" else 1000, style="raw")

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        rgb, depth, gt = self.files[i]
        rgb = (rgb - MEAN) / STD
        depth = (depth - MEAN) / STD
        gt = np.asarray(gt)  # BUG: the reference code does `gt = gt - 1` here
        return rgb, depth, torch.from_numpy(gt.astype(np.int64))


seed_all(0)
train_loader = DataLoader(SUNRGBD("train"), batch_size=8, shuffle=True, drop_last=True)
val_loader = DataLoader(SUNRGBD("val"), batch_size=8)
model = TinySegNet(4, NUM_CLASSES, width=32)
criterion = nn.CrossEntropyLoss(ignore_index=-1)
optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
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
