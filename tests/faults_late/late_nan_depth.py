"""Fault: at step 300 the training set switches to the raw sensor depth, where holes
(no return) are stored as NaN.  Every later batch carries NaN in its depth input; the loss
turns NaN and the weights follow.

Expected findings: data.nonfinite (the cause) and loss.nonfinite.  FAULT_STEP = 300.
``--healthy``: holes are filled with 0 (the normalized mean), as the loader should.
"""
import math

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset

from _late import (BATCH, EVAL_EVERY, HEALTHY, NUM_CLASSES, TOTAL_STEPS, WIDTH, SynthRGBD,
                   TinySegNet, endless, log_miou, log_step, seed_all, validate)

FAULT_STEP = 300
RAW_BEGIN = 300


class Depth(Dataset):
    def __init__(self, n, seed):
        self.base = SynthRGBD(n, size=32, num_classes=NUM_CLASSES, seed=seed)
        self.raw = False

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        rgb, depth, label = self.base[i]
        if self.raw:
            depth = depth.clone()
            g = torch.Generator().manual_seed(i)
            for _ in range(3):  # a few rectangular holes per frame
                y, x = torch.randint(0, 24, (2,), generator=g).tolist()
                depth[:, y:y + 6, x:x + 8] = 0.0 if HEALTHY else math.nan  # BUG: holes left as NaN
        return rgb, depth, label


seed_all(0)
train_set = Depth(160, 0)
train_loader = DataLoader(train_set, batch_size=BATCH, shuffle=True, drop_last=True,
                          generator=torch.Generator().manual_seed(0))
val_loader = DataLoader(SynthRGBD(32, size=32, num_classes=NUM_CLASSES, seed=1000), batch_size=BATCH)
model = TinySegNet(4, NUM_CLASSES, WIDTH)
criterion = nn.CrossEntropyLoss(ignore_index=-1)
optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
model.train()
for step, (epoch, (rgb, depth, label)) in enumerate(endless(train_loader), 1):
    if step == RAW_BEGIN:
        train_set.raw = True  # stage 2: add the raw sensor depth
    loss = criterion(model(torch.cat([rgb, depth], 1)), label)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    log_step(step, loss.item(), optimizer)
    if step % EVAL_EVERY == 0:
        log_miou(step, validate(model, val_loader))
    if step == TOTAL_STEPS:
        break
