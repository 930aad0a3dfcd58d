"""A tiny training whose Dataset sleeps 20 ms in ``__getitem__`` (num_workers=0, batch 8):
each step waits ~160 ms for its batch and computes for a few ms, so almost all of the wall
time is spent in the DataLoader.

Expected finding: perf.data_bound (once the shim sends ``step.data_wait`` / ``step.wall``).
"""
import time

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset

NUM_CLASSES = 5
STEPS = 40


class SlowDataset(Dataset):
    def __len__(self):
        return 10_000

    def __getitem__(self, i):
        time.sleep(0.02)   # decoding a large PNG
        g = torch.Generator().manual_seed(i)
        img = torch.randn(3, 32, 32, generator=g)
        label = (img[0] > 0).long() + (img[1] > 0).long()
        return img, label


torch.manual_seed(0)
model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, NUM_CLASSES, 1))
optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
criterion = nn.CrossEntropyLoss()
loader = DataLoader(SlowDataset(), batch_size=8, shuffle=True, num_workers=0)
for it, (img, label) in enumerate(loader, 1):
    loss = criterion(model(img), label)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    if it >= STEPS:
        break
print("done", flush=True)
