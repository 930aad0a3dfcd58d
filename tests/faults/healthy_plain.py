"""Healthy training, plain style: tuple batches, the model returns logits,
CrossEntropyLoss(ignore_index=-1).  13 classes with two dominant ones (wall, floor).

Expected findings: none at error level.  Early on the model predicts only the 2-3
dominant classes while the loss falls fast; that is normal, not a collapse.
FAULT_STEP = 0 (no fault).
"""
import argparse
import time

import torch
import torch.nn as nn

from _synth import TinySegNet, evaluate, loaders, seed_all

FAULT_STEP = 0
NUM_CLASSES = 13


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--lr", type=float, default=1e-2)
    args = p.parse_args()
    seed_all(0)
    train_loader, val_loader = loaders(NUM_CLASSES)
    model = TinySegNet(4, NUM_CLASSES)
    criterion = nn.CrossEntropyLoss(ignore_index=-1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    total = args.epochs * len(train_loader)
    it = 0
    t0 = time.time()
    for epoch in range(1, args.epochs + 1):
        model.train()
        for rgb, depth, label in train_loader:
            it += 1
            logits = model(torch.cat([rgb, depth], 1))
            loss = criterion(logits, label)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if it % 10 == 0:
                print(f"iter {it}/{total} loss {loss.item():.4f}", flush=True)
        miou = evaluate(model, val_loader, NUM_CLASSES, ignore_index=-1)
        print(f"epoch {epoch}: mIoU: {miou:.2f}", flush=True)
    print(f"done in {time.time() - t0:.1f}s", flush=True)


if __name__ == "__main__":
    main()
