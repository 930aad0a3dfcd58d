"""Fault: the segmentation head was copied from an NYUDepthv2-40 config and still has
40 output channels while the dataset (SUNRGBD) has 37 classes.  Training runs (labels
0..36 are valid targets for 40 logits) but three phantom classes take probability mass
and the evaluation's confusion matrix is built for the wrong class count.

Expected finding: config.num_classes_mismatch.  FAULT_STEP = 0.
"""
import torch
import torch.nn as nn

from _synth import TinySegNet, evaluate, loaders, seed_all

FAULT_STEP = 0
NUM_CLASSES = 37
HEAD_CLASSES = 40  # BUG: left over from the NYUv2-40 config

seed_all(0)
train_loader, val_loader = loaders(NUM_CLASSES)
model = TinySegNet(4, HEAD_CLASSES, width=32)
criterion = nn.CrossEntropyLoss(ignore_index=-1)
optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
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
    print(f"epoch {epoch}: mIoU: {evaluate(model, val_loader, HEAD_CLASSES):.2f}", flush=True)
