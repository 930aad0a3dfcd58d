"""A tiny DFormer-style training: each epoch makes a new iterator over the training loader and
calls next() a fixed number of times (fewer than len(loader): the iterator is never exhausted),
then evaluates over a validation loader to its end.

--epochs N        epochs (default 3)
--niters K        next() calls per epoch (default 5; the loader has 8 batches)
--peek            next(iter(train_loader)) once before training (a look at one batch)
--sleep S         seconds the Dataset sleeps per sample (default 0.005)
"""
import argparse
import time

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset

p = argparse.ArgumentParser()
p.add_argument("--epochs", type=int, default=3)
p.add_argument("--niters", type=int, default=5)
p.add_argument("--peek", action="store_true")
p.add_argument("--sleep", type=float, default=0.005)
args = p.parse_args()

torch.manual_seed(0)
torch.set_num_threads(1)
C = 4


class Synth(Dataset):
    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        time.sleep(args.sleep)
        g = torch.Generator().manual_seed(i)
        img = torch.randn(3, 16, 16, generator=g)
        label = (img[0] > 0).long() + 2 * (img[1] > 0).long()
        return img, label


model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, C, 1))
optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
criterion = nn.CrossEntropyLoss()
train_loader = DataLoader(Synth(16), batch_size=2, shuffle=True, num_workers=0)
val_loader = DataLoader(Synth(4), batch_size=2)
if args.peek:
    img, label = next(iter(train_loader))
    print("peek", tuple(img.shape), flush=True)
for epoch in range(args.epochs):
    model.train()
    it = iter(train_loader)
    for i in range(args.niters):
        img, label = next(it)
        loss = criterion(model(img), label)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        for img, label in val_loader:
            model(img)
    print(f"epoch {epoch + 1} done", flush=True)
