"""Fault: labels are remapped through a class-id table loaded from JSON.  JSON object
keys are strings, the lookup uses ints, so every pixel falls through to the default
(ignore = -1).  Every label map is entirely "unlabeled"; CrossEntropyLoss averages over
zero pixels and the loss is NaN from the first step.

Expected finding: label.all_ignored.  FAULT_STEP = 0.
"""
import json

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset

from _synth import SynthRGBD, TinySegNet, evaluate, seed_all

FAULT_STEP = 0
NUM_CLASSES = 13
# raw annotation ids (1..13) -> training ids (0..12), as stored in the dataset's mapping.json
MAPPING = json.loads(json.dumps({i + 1: i for i in range(NUM_CLASSES)}))


class MappedDataset(Dataset):
    def __init__(self, n, seed):
        self.base = SynthRGBD(n, num_classes=NUM_CLASSES, seed=seed, style="raw")

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        rgb, depth, raw = self.base[i]
        raw = raw.numpy()
        lut = np.full(256, -1, dtype=np.int64)
        for k in range(256):
            lut[k] = MAPPING.get(k, -1)  # BUG: MAPPING's keys are '1', '2', ... (str)
        return (rgb - 0.5) / 0.25, (depth - 0.5) / 0.25, torch.from_numpy(lut[raw])


seed_all(0)
train_loader = DataLoader(MappedDataset(160, 0), batch_size=8, shuffle=True, drop_last=True)
val_loader = DataLoader(MappedDataset(32, 1000), batch_size=8)
model = TinySegNet(4, NUM_CLASSES)
criterion = nn.CrossEntropyLoss(ignore_index=-1)
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
        if it % 10 == 0:
            print(f"iter {it} loss {loss.item():.4f}", flush=True)
    print(f"epoch {epoch}: mIoU: {evaluate(model, val_loader, NUM_CLASSES):.2f}", flush=True)
