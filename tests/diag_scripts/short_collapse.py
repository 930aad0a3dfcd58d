"""A short run (64 steps, shorter than a grace window of 100) whose learning rate is far
too high (10.0 with SGD+momentum): it ends predicting one class. Its evaluations every
16 steps print the mIoU once per line, twice per evaluation (like the guide's fork).

Expected finding: pred.collapse (the run ends collapsed, whatever the grace window).
"""
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "faults"))

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

from _synth import TinySegNet, evaluate, loaders, seed_all  # noqa: E402

NUM_CLASSES = 13
STEPS = 64

seed_all(0)
train_loader, val_loader = loaders(NUM_CLASSES)
model = TinySegNet(4, NUM_CLASSES)
criterion = nn.CrossEntropyLoss(ignore_index=-1)
optimizer = torch.optim.SGD(model.parameters(), lr=10.0, momentum=0.9)
it = 0
while it < STEPS:
    for rgb, depth, label in train_loader:
        model.train()
        it += 1
        loss = criterion(model(torch.cat([rgb, depth], 1)), label)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if it % 16 == 0:
            miou = evaluate(model, val_loader, NUM_CLASSES)
            print(f"iter {it}: mIoU: {miou:.2f}", flush=True)
            print(f"iter {it}: best mIoU: {miou:.2f}", flush=True)
        if it >= STEPS:
            break
