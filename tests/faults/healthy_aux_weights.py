"""Healthy training, torchvision-references style: the model returns
``{"out": ..., "aux": ...}`` (an auxiliary head), the loss is
``CE(out) + 0.4 * CE(aux)`` with sane class weights (inverse square root of the class
frequency, normalized to mean 1: at most a few times the median) and the right
ignore_index.  Two loss calls per step, a weighted loss: nothing to report.

Expected findings: none at error level.  FAULT_STEP = 0 (no fault).
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from _synth import TinySegNet, evaluate, loaders, seed_all

FAULT_STEP = 0
NUM_CLASSES = 13


class WithAux(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = TinySegNet(4, NUM_CLASSES)
        self.aux_classifier = nn.Conv2d(24, NUM_CLASSES, 1)

    def forward(self, x):
        h = self.net.backbone(x)
        return {"out": self.net.classifier(h), "aux": self.aux_classifier(h)}


seed_all(0)
train_loader, val_loader = loaders(NUM_CLASSES)
counts = torch.zeros(NUM_CLASSES)
for _, _, label in train_loader:
    counts += torch.bincount(label[label >= 0], minlength=NUM_CLASSES).float()
weight = (counts.sum() / counts.clamp(min=1)).sqrt()
weight = weight / weight.mean()
model = WithAux()
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=1e-4)


def criterion(outputs, target):
    losses = {k: F.cross_entropy(v, target, weight=weight, ignore_index=-1) for k, v in outputs.items()}
    return losses["out"] + 0.4 * losses["aux"]


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
    miou = evaluate(model, val_loader, NUM_CLASSES, forward=lambda r, d: model(torch.cat([r, d], 1))["out"])
    print(f"epoch {epoch}: mIoU: {miou:.2f}", flush=True)
