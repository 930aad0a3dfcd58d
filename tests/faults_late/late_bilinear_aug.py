"""Fault: a random zoom augmentation is switched on after warm-up (step 300).  It resizes
image, depth and label with the same call, bilinear, and casts the label back with
``.long()``: along every boundary the label takes in-between values that are real, wrong
classes, and near unlabeled (-1) regions values truncate towards 0.

Expected finding: label.interpolated.  FAULT_STEP = 300.
``--healthy``: the label is resized with mode="nearest" (the healthy twin).
"""
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from _late import (BATCH, EVAL_EVERY, HEALTHY, NUM_CLASSES, TOTAL_STEPS, WIDTH, SynthRGBD,
                   TinySegNet, endless, log_miou, log_step, seed_all, validate)

FAULT_STEP = 300
AUG_BEGIN = 300
SIZE = 32


class Zoomed(Dataset):
    """SynthRGBD samples, optionally zoomed in by 1.1-1.5x and cropped back to SIZE."""

    def __init__(self, n, seed):
        self.base = SynthRGBD(n, size=SIZE, num_classes=NUM_CLASSES, seed=seed)
        self.zoom = False

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        rgb, depth, label = self.base[i]
        if not self.zoom:
            return rgb, depth, label
        s = int(SIZE * float(torch.empty(1).uniform_(1.1, 1.5)))
        y, x = (int(v) for v in torch.randint(0, s - SIZE + 1, (2,)))
        rgb = F.interpolate(rgb[None], size=(s, s), mode="bilinear", align_corners=False)[0]
        depth = F.interpolate(depth[None], size=(s, s), mode="bilinear", align_corners=False)[0]
        mode = "nearest" if HEALTHY else "bilinear"  # BUG: labels need mode="nearest"
        label = F.interpolate(label[None, None].float(), size=(s, s), mode=mode)[0, 0].long()
        crop = (slice(y, y + SIZE), slice(x, x + SIZE))
        return rgb[:, crop[0], crop[1]], depth[:, crop[0], crop[1]], label[crop]


seed_all(0)
train_set = Zoomed(160, 0)
train_loader = DataLoader(train_set, batch_size=BATCH, shuffle=True, drop_last=True,
                          generator=torch.Generator().manual_seed(0))
val_loader = DataLoader(SynthRGBD(32, size=SIZE, num_classes=NUM_CLASSES, seed=1000), batch_size=BATCH)
model = TinySegNet(4, NUM_CLASSES, WIDTH)
criterion = nn.CrossEntropyLoss(ignore_index=-1)
optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
model.train()
for step, (epoch, (rgb, depth, label)) in enumerate(endless(train_loader), 1):
    if step == AUG_BEGIN:
        train_set.zoom = True  # stage 2: scale augmentation on (read from the next batch on)
    loss = criterion(model(torch.cat([rgb, depth], 1)), label)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    log_step(step, loss.item(), optimizer)
    if step % EVAL_EVERY == 0:
        log_miou(step, validate(model, val_loader))
    if step == TOTAL_STEPS:
        break
