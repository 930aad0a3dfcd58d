"""Fault: images and labels are rescaled from 48x48 to 32x32 with the same call,
bilinear interpolation, and the label is then cast back with ``.long()``.  Along every
boundary between two classes the label takes in-between values (class 3 | class 9 ->
5, 6, 7, 8) that are real, wrong classes; near unlabeled (-1) regions values round
towards 0.

Expected finding: label.interpolated.  FAULT_STEP = 0.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from _synth import SynthRGBD, TinySegNet, evaluate, seed_all

FAULT_STEP = 0
NUM_CLASSES = 13


def resize(x, size):
    return F.interpolate(x[None].float(), size=size, mode="bilinear", align_corners=False)[0]


class Rescaled(Dataset):
    def __init__(self, n, seed):
        self.base = SynthRGBD(n, size=48, num_classes=NUM_CLASSES, seed=seed)

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        rgb, depth, gt = self.base[i]
        rgb, depth = resize(rgb, (32, 32)), resize(depth, (32, 32))
        gt = resize(gt[None], (32, 32))[0].long()  # BUG: labels need mode="nearest"
        return rgb, depth, gt


seed_all(0)
train_loader = DataLoader(Rescaled(160, 0), batch_size=8, shuffle=True, drop_last=True)
val_loader = DataLoader(Rescaled(32, 1000), batch_size=8)
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
