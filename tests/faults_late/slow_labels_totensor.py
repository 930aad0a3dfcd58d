"""Fault (slow burn, from the start): the training transform reads the label PNG (uint8,
classes 0..12, unlabeled 255) with a ToTensor-like conversion that divides by 255, then
casts to long: every class becomes 0 and unlabeled becomes 1.  Validation reads the PNG
as integers.  The training loss falls to ~0 while the mIoU stays near the wall's IoU / 13.

Expected finding: label.single_value (training labels hold two values over many batches
while the evaluation labels hold all 13).  FAULT_STEP = 0; only the first evaluation
(step 50) shows the contrast with evaluation labels.
``--healthy``: the training transform keeps the integers (the healthy twin).
"""
import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset

from _late import (BATCH, EVAL_EVERY, HEALTHY, NUM_CLASSES, TOTAL_STEPS, WIDTH, SynthRGBD,
                   TinySegNet, endless, log_miou, log_step, seed_all, validate)

FAULT_STEP = 0
IGNORE = 255


class PngLabels(Dataset):
    """Labels stored as uint8 PNG arrays (255 = unlabeled), decoded per split."""

    def __init__(self, n, seed, train):
        self.base = SynthRGBD(n, size=32, num_classes=NUM_CLASSES, seed=seed, ignore_value=IGNORE)
        self.png = [lab.numpy().astype(np.uint8) for lab in self.base.label]
        self.train = train

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        rgb, depth, _ = self.base[i]
        png = self.png[i]
        if self.train and not HEALTHY:
            label = torch.from_numpy(png).float().div(255).long()  # BUG: ToTensor scaling on a label map
        else:
            label = torch.from_numpy(png.astype(np.int64))
        return rgb, depth, label


seed_all(0)
train_loader = DataLoader(PngLabels(160, 0, True), batch_size=BATCH, shuffle=True, drop_last=True,
                          generator=torch.Generator().manual_seed(0))
val_loader = DataLoader(PngLabels(32, 1000, False), batch_size=BATCH)
model = TinySegNet(4, NUM_CLASSES, WIDTH)
criterion = nn.CrossEntropyLoss(ignore_index=IGNORE)
optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
model.train()
for step, (epoch, (rgb, depth, label)) in enumerate(endless(train_loader), 1):
    loss = criterion(model(torch.cat([rgb, depth], 1)), label)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    log_step(step, loss.item(), optimizer)
    if step % EVAL_EVERY == 0:
        log_miou(step, validate(model, val_loader, ignore_index=IGNORE))
    if step == TOTAL_STEPS:
        break
