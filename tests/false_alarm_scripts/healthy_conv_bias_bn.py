"""Healthy training whose convolutions keep their bias in front of a BatchNorm (very common:
``nn.Conv2d`` defaults to bias=True). BN subtracts the batch mean, so the bias gradient is
float rounding noise (~1e-9): SGD's update lr * g is far below the float32 resolution of
the bias and the bias never changes. That is not an optimizer fault.

Expected findings: no optim.params_not_stepped, nothing at error level.
"""
import sys
from pathlib import Path

import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "faults"))
from _synth import evaluate, loaders, seed_all  # noqa: E402

NUM_CLASSES = 13


class ConvBiasBNNet(nn.Module):
    def __init__(self, in_ch: int = 4, num_classes: int = NUM_CLASSES, width: int = 24):
        super().__init__()
        self.backbone = nn.Sequential(
            nn.Conv2d(in_ch, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, padding=2, dilation=2), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
        )
        self.classifier = nn.Conv2d(width, num_classes, 1)

    def forward(self, x):
        return self.classifier(self.backbone(x))


seed_all(0)
train_loader, val_loader = loaders(NUM_CLASSES)
model = ConvBiasBNNet()
criterion = nn.CrossEntropyLoss(ignore_index=-1)
optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
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
