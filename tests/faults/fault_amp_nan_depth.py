"""Fault (the guide's codebase's "frozen mIoU", problem 3): depth maps are stored as
float arrays with sensor holes as NaN, and nothing replaces them.  Under AMP the NaN
spreads through BatchNorm to the whole batch, the loss is NaN, and ``GradScaler`` sees
non-finite gradients and skips ``optimizer.step()`` on every iteration, shrinking its
scale each time.  backward keeps running, the weights never change, the printed mIoU
repeats.

Expected findings: optim.steps_skipped and data.nonfinite.  FAULT_STEP = 0.
"""
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset

from _synth import MEAN, STD, SynthRGBD, TinySegNet, evaluate, seed_all

FAULT_STEP = 0
NUM_CLASSES = 13


class DepthWithHoles(Dataset):
    def __init__(self, n, seed):
        self.base = SynthRGBD(n, num_classes=NUM_CLASSES, seed=seed, normalize=False)
        g = torch.Generator().manual_seed(seed)
        self.depth = []
        for d in self.base.depth:
            if torch.rand(1, generator=g).item() < 0.8:  # most frames have missing returns
                hole = torch.rand(d.shape, generator=g) < 0.02
                d = d.masked_fill(hole, float("nan"))  # how the .npy depth stores "no reading"
            self.depth.append(d)

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        rgb, _, gt = self.base[i]
        depth = (self.depth[i] - MEAN) / STD  # BUG: NaN holes are never filled (nan_to_num / inpaint)
        return (rgb - MEAN) / STD, depth, gt


seed_all(0)
train_loader = DataLoader(DepthWithHoles(160, 0), batch_size=8, shuffle=True, drop_last=True)
val_loader = DataLoader(DepthWithHoles(32, 1000), batch_size=8)
model = TinySegNet(4, NUM_CLASSES)
criterion = nn.CrossEntropyLoss(ignore_index=-1)
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
scaler = torch.amp.GradScaler("cpu")
it = 0
for epoch in range(1, 6):
    model.train()
    for rgb, depth, label in train_loader:
        it += 1
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = criterion(model(torch.cat([rgb, depth], 1)).float(), label)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        if it % 10 == 0:
            print(f"iter {it} loss {loss.item():.4f} scale {scaler.get_scale():.3g}", flush=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        print(f"epoch {epoch}: mIoU: {evaluate(model, val_loader, NUM_CLASSES):.2f}", flush=True)
