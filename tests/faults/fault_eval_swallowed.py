"""Fault: the evaluation is wrapped in try/except that logs the error and moves on,
and the script prints ``best_miou``, which is never updated.  The evaluation itself
crashes on its first batch: the hand-written confusion matrix feeds ignore pixels (-1)
into ``np.bincount`` ("must have no negative elements").  Every epoch prints the same
stale mIoU (guide problem 2; the "frozen mIoU" of the guide's codebase).

Expected finding: metric.eval_aborted.  FAULT_STEP = 20 (the first evaluation).
"""
import logging

import numpy as np
import torch
import torch.nn as nn

from _synth import TinySegNet, loaders, seed_all

FAULT_STEP = 20
NUM_CLASSES = 13
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
logger = logging.getLogger("train")


def fast_hist(label, pred, n):
    return np.bincount(n * label.reshape(-1) + pred.reshape(-1), minlength=n ** 2).reshape(n, n)


@torch.no_grad()
def evaluate(model, loader):
    model.eval()
    hist = np.zeros((NUM_CLASSES, NUM_CLASSES))
    for rgb, depth, label in loader:
        pred = model(torch.cat([rgb, depth], 1)).argmax(1)
        hist += fast_hist(label.numpy(), pred.numpy(), NUM_CLASSES)  # BUG: ignore (-1) not masked
    model.train()
    iou = np.diag(hist) / (hist.sum(0) + hist.sum(1) - np.diag(hist))
    return float(np.nan_to_num(iou).mean() * 100)


seed_all(0)
train_loader, val_loader = loaders(NUM_CLASSES)
model = TinySegNet(4, NUM_CLASSES)
criterion = nn.CrossEntropyLoss(ignore_index=-1)
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
best_miou = 0.0
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
    try:
        miou = evaluate(model, val_loader)
        best_miou = max(best_miou, miou)
    except Exception:
        logger.exception("evaluation failed, keeping the previous result")
        model.train()
    print(f"epoch {epoch}: mIoU: {best_miou:.2f}", flush=True)
