"""Healthy training under automatic mixed precision on CPU: ``torch.autocast("cpu",
dtype=torch.bfloat16)`` and ``torch.amp.GradScaler("cpu")``.  The scaler steps every
iteration (finite gradients).  13 classes, ignore -1.

Expected findings: none at error level.  FAULT_STEP = 0 (no fault).
"""
import time

import torch
import torch.nn as nn

from _synth import TinySegNet, evaluate, loaders, seed_all

FAULT_STEP = 0
NUM_CLASSES = 13


def main():
    seed_all(0)
    train_loader, val_loader = loaders(NUM_CLASSES)
    model = TinySegNet(4, NUM_CLASSES)
    criterion = nn.CrossEntropyLoss(ignore_index=-1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    scaler = torch.amp.GradScaler("cpu")
    it = 0
    epochs = 5
    t0 = time.time()
    for epoch in range(1, epochs + 1):
        model.train()
        for rgb, depth, label in train_loader:
            it += 1
            with torch.autocast("cpu", dtype=torch.bfloat16):
                logits = model(torch.cat([rgb, depth], 1))
                loss = criterion(logits.float(), label)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            if it % 10 == 0:
                print(f"iter {it} loss {loss.item():.4f} scale {scaler.get_scale():.0f}", flush=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            miou = evaluate(model, val_loader, NUM_CLASSES, ignore_index=-1)
        print(f"epoch {epoch}: mIoU: {miou:.2f}", flush=True)
    print(f"done in {time.time() - t0:.1f}s", flush=True)


if __name__ == "__main__":
    main()
