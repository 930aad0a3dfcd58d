"""Fault: the dataset converts the images to float but never normalizes them (no
``/ 255``, no mean/std): RGB values run 0..255 and depth (in millimetres) 0..10000.
BatchNorm absorbs part of it so the model still learns, slowly and unstably.

Expected finding: data.not_normalized.  FAULT_STEP = 0.
"""
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset

from _synth import SynthRGBD, TinySegNet, evaluate, seed_all

FAULT_STEP = 0
NUM_CLASSES = 13


class Raw(Dataset):
    def __init__(self, n, seed):
        self.base = SynthRGBD(n, num_classes=NUM_CLASSES, seed=seed, normalize=False)

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        rgb, depth, gt = self.base[i]
        rgb = (rgb * 255).round()      # as read from the PNG, uint8 -> float
        depth = (depth * 10000).round()  # 16-bit depth PNG in millimetres
        # BUG: the Normalize(mean, std) step of the pipeline is missing
        return rgb, depth, gt


seed_all(0)
train_loader = DataLoader(Raw(160, 0), batch_size=8, shuffle=True, drop_last=True)
val_loader = DataLoader(Raw(32, 1000), batch_size=8)
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
