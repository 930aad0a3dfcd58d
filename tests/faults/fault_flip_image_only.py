"""Fault: the training augmentation flips the image and the depth horizontally with
probability 0.5 but forgets the label, so half of the training samples are supervised
with a mirrored label map.  Validation is unaugmented.

Expected finding: label.misaligned.  FAULT_STEP = 0.
"""
import random

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset

from _synth import SynthRGBD, TinySegNet, evaluate, seed_all

FAULT_STEP = 0
NUM_CLASSES = 13


class Augmented(Dataset):
    def __init__(self, n, seed, train):
        self.base = SynthRGBD(n, num_classes=NUM_CLASSES, seed=seed)
        self.train = train

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        rgb, depth, gt = self.base[i]
        if self.train and random.random() < 0.5:
            rgb = torch.flip(rgb, dims=[-1])
            depth = torch.flip(depth, dims=[-1])
            # BUG: gt = torch.flip(gt, dims=[-1]) is missing
        return rgb, depth, gt


seed_all(0)
random.seed(0)
train_loader = DataLoader(Augmented(160, 0, True), batch_size=8, shuffle=True, drop_last=True)
val_loader = DataLoader(Augmented(32, 1000, False), batch_size=8)
model = TinySegNet(4, NUM_CLASSES)
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
