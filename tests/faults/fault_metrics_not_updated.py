"""Fault: the guide's Metrics class, but the ``metrics.update(preds, labels)`` call was
commented out while debugging a shape error and never restored.  The confusion matrix
(``hist``) stays all zeros, ``compute_iou`` turns 0/0 into 0 and every evaluation prints
mIoU 0.00 while the model is learning fine (guide problem 2).  segwatch's own confusion
matrix is fed from the model outputs, so it is not empty: the two disagree.

Expected finding: metric.script_disagrees.  FAULT_STEP = 20 (the first evaluation).
"""
from typing import Tuple

import torch
import torch.nn as nn

from _synth import TinySegNet, loaders, seed_all

FAULT_STEP = 20
NUM_CLASSES = 13
IGNORE = -1


class Metrics:
    def __init__(self, num_classes: int, ignore_label: int, device):
        self.num_classes = num_classes
        self.ignore_label = ignore_label
        self.hist = torch.zeros(num_classes, num_classes).to(device)

    def update(self, pred, target) -> None:
        pred = pred.argmax(dim=1)
        keep = target != self.ignore_label
        self.hist += torch.bincount(target[keep] * self.num_classes + pred[keep],
                                    minlength=self.num_classes ** 2).view(self.num_classes, self.num_classes)

    def compute_iou(self) -> Tuple[list, float]:
        ious = self.hist.diag() / (self.hist.sum(0) + self.hist.sum(1) - self.hist.diag())
        ious[ious.isnan()] = 0.0
        miou = ious.mean().item()
        ious *= 100
        miou *= 100
        return ious.cpu().numpy().round(2).tolist(), round(miou, 2)


seed_all(0)
train_loader, val_loader = loaders(NUM_CLASSES)
model = TinySegNet(4, NUM_CLASSES)
criterion = nn.CrossEntropyLoss(ignore_index=IGNORE)
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
it = 0
for epoch in range(1, 6):
    model.train()
    for imgs, modal_xs, gts in train_loader:
        it += 1
        loss = criterion(model(torch.cat([imgs, modal_xs], 1)), gts)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if it % 10 == 0:
            print(f"iter {it} loss {loss.item():.4f}", flush=True)
    model.eval()
    metrics = Metrics(NUM_CLASSES, IGNORE, "cpu")
    with torch.no_grad():
        for imgs, modal_xs, gts in val_loader:
            preds = model(torch.cat([imgs, modal_xs], 1)).softmax(dim=1)
            # metrics.update(preds, gts)   # BUG: disabled while debugging, never restored
    ious, miou = metrics.compute_iou()
    print(f"epoch {epoch}: mIoU: {miou:.2f}", flush=True)
