"""Fault (issue 17, the reverse reduce_zero_label mismatch): the annotations are already
0-based (0..C-1, 255 for unlabeled) but the loader applies mmseg's ``reduce_zero_label``
(0 -> 255, k -> k - 1, 254 -> 255) as if 0 meant unlabeled.  Class 0 (wall) is trained
as ignore, every class id is off by one, and the last class (blinds) never appears; the
training runs and its mIoU rises.

Expected finding: label.last_class_missing.  FAULT_STEP = 0.
"""
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset

from _synth import SynthRGBD, TinySegNet, evaluate, seed_all

FAULT_STEP = 0
NUM_CLASSES = 13


class ReduceZero(Dataset):
    def __init__(self, split):
        self.files = SynthRGBD(160 if split == "train" else 32, num_classes=NUM_CLASSES,
                               seed=0 if split == "train" else 1000, ignore_value=255)

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        rgb, depth, gt = self.files[i]
        gt = gt.clone()
        # BUG: reduce_zero_label on 0-based annotations (mmseg's LoadAnnotations does this)
        gt[gt == 0] = 255
        gt = gt - 1
        gt[gt == 254] = 255
        return rgb, depth, gt


seed_all(0)
train_loader = DataLoader(ReduceZero("train"), batch_size=8, shuffle=True, drop_last=True)
val_loader = DataLoader(ReduceZero("val"), batch_size=8)
model = TinySegNet(4, NUM_CLASSES)
criterion = nn.CrossEntropyLoss(ignore_index=255)
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=1e-4)
it = 0
for epoch in range(1, 5):
    model.train()
    for rgb, depth, label in train_loader:
        it += 1
        loss = criterion(model(torch.cat([rgb, depth], 1)), label)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    print(f"epoch {epoch}: mIoU: {evaluate(model, val_loader, NUM_CLASSES, ignore_index=255):.2f}", flush=True)
