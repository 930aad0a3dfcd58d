"""Fault (issue 17, the DFormer-style class-weight mistake): the loss's class weights put
100 on one class (``door``) and 1 on every other, and the per-pixel loss is averaged over
the pixels (``reduction="none"`` then ``.mean()``, as OHEM-style code does), so every door
pixel counts 100 times.  On the DFormer fork this was found as grad.exploding; this
BatchNorm net keeps its gradients small after step 1 and ends up predicting few classes.

Expected finding: pred.low_diversity, whose evidence names the loss's class weight (class 7,
door, 100x the median) and whose advice says to check the class weights first.
FAULT_STEP = 0.
"""
import torch
import torch.nn as nn

from _synth import TinySegNet, evaluate, loaders, seed_all

FAULT_STEP = 0
NUM_CLASSES = 13
DOOR = 7

seed_all(0)
train_loader, val_loader = loaders(NUM_CLASSES)
model = TinySegNet(4, NUM_CLASSES)
weight = torch.ones(NUM_CLASSES)
weight[DOOR] = 100.0  # BUG: meant 1.00 (a typo in the per-class weight list)
criterion = nn.CrossEntropyLoss(weight=weight, ignore_index=-1, reduction="none")
optimizer = torch.optim.SGD(model.parameters(), lr=5e-2, momentum=0.9)
it = 0
for epoch in range(1, 5):
    model.train()
    for rgb, depth, label in train_loader:
        it += 1
        pixel_loss = criterion(model(torch.cat([rgb, depth], 1)), label)
        loss = pixel_loss[label != -1].mean()
        optimizer.zero_grad()
        loss.backward()
        gn = torch.norm(torch.stack([p.grad.norm() for p in model.parameters() if p.grad is not None]))
        optimizer.step()
        if it % 5 == 0:
            print(f"iter {it} loss {loss.item():.2f} grad_norm {gn.item():.1f}", flush=True)
    print(f"epoch {epoch}: mIoU: {evaluate(model, val_loader, NUM_CLASSES):.2f}", flush=True)
