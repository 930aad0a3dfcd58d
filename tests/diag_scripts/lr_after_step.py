"""The guide's fork sets each iteration's learning rate after ``optimizer.step()``: the
first update runs at the optimizer's base LR (the warm-up is skipped), the second at the
warm-up's LR for iteration 0 (zero), and every later one a step late. ``--healthy`` sets
the LR before ``step()``.

Expected finding: optim.lr_schedule (naming the LR applied at steps 1 and 2).
"""
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "faults"))

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

from _synth import TinySegNet, loaders, seed_all  # noqa: E402

NUM_CLASSES = 13
STEPS = 40
BASE_LR = 1e-2
WARMUP = 20
HEALTHY = "--healthy" in sys.argv


def warmup_lr(it: int) -> float:
    return BASE_LR * min(1.0, it / WARMUP)


seed_all(0)
train_loader, _ = loaders(NUM_CLASSES, n_train=48, n_val=8)
model = TinySegNet(4, NUM_CLASSES)
criterion = nn.CrossEntropyLoss(ignore_index=-1)
optimizer = torch.optim.SGD(model.parameters(), lr=BASE_LR, momentum=0.9)
it = 0
while it < STEPS:
    for rgb, depth, label in train_loader:
        loss = criterion(model(torch.cat([rgb, depth], 1)), label)
        optimizer.zero_grad()
        loss.backward()
        if HEALTHY:
            for g in optimizer.param_groups:
                g["lr"] = warmup_lr(it + 1)
        optimizer.step()
        if not HEALTHY:
            for g in optimizer.param_groups:   # BUG: the LR for this iteration, set after step()
                g["lr"] = warmup_lr(it)
        it += 1
        if it % 10 == 0:
            print(f"iter {it} loss {loss.item():.4f} lr {optimizer.param_groups[0]['lr']:.2e}", flush=True)
        if it >= STEPS:
            break
