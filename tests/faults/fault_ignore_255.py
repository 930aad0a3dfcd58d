"""Fault (the DFormer SUNRGBD pipeline, as the guide's codebase really does it): label
PNGs are read as uint8 and shifted with ``gt - 1``, so "unlabeled" (0) wraps to 255.
The loss uses ignore_index=255 and trains fine, but the segwatch config (like the guide)
says ignore_index -1: the labels carry another ignore value than configured.

Expected finding: label.ignore_mismatch.  FAULT_STEP = 0.
"""
import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset

from _synth import MEAN, STD, SynthRGBD, TinySegNet, evaluate, seed_all

FAULT_STEP = 0
NUM_CLASSES = 37
BACKGROUND = 255  # C.background in the training config


class SUNRGBD(Dataset):
    def __init__(self, split):
        self.files = SynthRGBD(160 if split == "train" else 32, num_classes=NUM_CLASSES,
                               seed=0 if split == "train" else 1000, style="raw")

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        rgb, depth, gt = self.files[i]
        gt = np.asarray(gt, dtype=np.uint8)
        gt = gt - 1  # uint8: 0 (unlabeled) wraps to 255
        return (rgb - MEAN) / STD, (depth - MEAN) / STD, torch.from_numpy(np.ascontiguousarray(gt)).long()


seed_all(0)
train_loader = DataLoader(SUNRGBD("train"), batch_size=8, shuffle=True, drop_last=True)
val_loader = DataLoader(SUNRGBD("val"), batch_size=8)
model = TinySegNet(4, NUM_CLASSES, width=32)
criterion = nn.CrossEntropyLoss(ignore_index=BACKGROUND)
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
    print(f"epoch {epoch}: mIoU: {evaluate(model, val_loader, NUM_CLASSES, ignore_index=BACKGROUND):.2f}", flush=True)
