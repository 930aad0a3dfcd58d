"""Fault: the label transform resizes to ``crop_size // 2`` (someone confused the label
size with the decoder's output stride), so labels are 16x16 for 32x32 images.  The
script then shrinks the logits to the label size for the loss and the metric, so it
trains, but supervision is half resolution and thin objects vanish.

Expected finding: label.shape_mismatch.  FAULT_STEP = 0.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from _synth import SynthRGBD, TinySegNet, fast_hist, miou_from_hist, seed_all

FAULT_STEP = 0
NUM_CLASSES = 13
CROP = 32


class Resized(Dataset):
    def __init__(self, n, seed):
        self.base = SynthRGBD(n, size=CROP, num_classes=NUM_CLASSES, seed=seed)

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        rgb, depth, gt = self.base[i]
        # BUG: label resized to crop // 2
        gt = F.interpolate(gt[None, None].float(), size=(CROP // 2, CROP // 2), mode="nearest")[0, 0].long()
        return rgb, depth, gt


seed_all(0)
train_loader = DataLoader(Resized(160, 0), batch_size=8, shuffle=True, drop_last=True)
val_loader = DataLoader(Resized(32, 1000), batch_size=8)
model = TinySegNet(4, NUM_CLASSES)
criterion = nn.CrossEntropyLoss(ignore_index=-1)
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
it = 0
for epoch in range(1, 6):
    model.train()
    for rgb, depth, label in train_loader:
        it += 1
        logits = model(torch.cat([rgb, depth], 1))
        if logits.shape[-2:] != label.shape[-2:]:
            logits = F.interpolate(logits, size=label.shape[-2:], mode="bilinear", align_corners=False)
        loss = criterion(logits, label)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if it % 10 == 0:
            print(f"iter {it} loss {loss.item():.4f}", flush=True)
    model.eval()
    hist = torch.zeros(NUM_CLASSES, NUM_CLASSES, dtype=torch.long)
    with torch.no_grad():
        for rgb, depth, label in val_loader:
            logits = model(torch.cat([rgb, depth], 1))
            logits = F.interpolate(logits, size=label.shape[-2:], mode="bilinear", align_corners=False)
            hist += fast_hist(logits.argmax(1), label, NUM_CLASSES)
    print(f"epoch {epoch}: mIoU: {miou_from_hist(hist):.2f}", flush=True)
