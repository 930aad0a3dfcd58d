"""Fault (the guide's "Target 255 is out of bounds"): label PNGs are read as uint8 and
shifted with ``gt - 1`` as the DFormer SUNRGBD pipeline does, so unlabeled pixels become
255, but the loss is built as ``nn.CrossEntropyLoss()`` and ignores its default -100.
The first training step raises inside the loss.

Expected finding: loss.ignore_index_mismatch (the loss's ignore_index -100, the target holds
255; use ignore_index=255).  FAULT_STEP = 0.
"""
import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset

from _synth import MEAN, STD, SynthRGBD, TinySegNet, evaluate, seed_all

FAULT_STEP = 0
NUM_CLASSES = 13


class Raw(Dataset):
    def __init__(self, split):
        self.files = SynthRGBD(160 if split == "train" else 32, num_classes=NUM_CLASSES,
                               seed=0 if split == "train" else 1000, style="raw")

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        rgb, depth, gt = self.files[i]
        gt = np.asarray(gt, dtype=np.uint8) - 1  # uint8: 0 (unlabeled) wraps to 255
        return (rgb - MEAN) / STD, (depth - MEAN) / STD, torch.from_numpy(np.ascontiguousarray(gt)).long()


seed_all(0)
train_loader = DataLoader(Raw("train"), batch_size=8, shuffle=True, drop_last=True)
val_loader = DataLoader(Raw("val"), batch_size=8)
model = TinySegNet(4, NUM_CLASSES)
criterion = nn.CrossEntropyLoss()  # BUG: the labels mark unlabeled pixels with 255, not -100
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
it = 0
for epoch in range(1, 4):
    model.train()
    for rgb, depth, label in train_loader:
        it += 1
        loss = criterion(model(torch.cat([rgb, depth], 1)), label)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    print(f"epoch {epoch}: mIoU: {evaluate(model, val_loader, NUM_CLASSES, ignore_index=255):.2f}", flush=True)
