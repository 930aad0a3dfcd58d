"""Healthy trap: linear warm-up from LR 0 (the first optimizer step runs at LR exactly 0)
over 100 steps, then poly decay (power 0.9) that reaches 0 at the last step.  The LR is
0 twice, on purpose, and tiny over the last few steps.

Expected findings: none.  FAULT_STEP = 0 (no fault).
"""
import torch
import torch.nn as nn

from _late import (BATCH, EVAL_EVERY, NUM_CLASSES, TOTAL_STEPS, WIDTH, TinySegNet, endless,
                   loaders, log_miou, log_step, seed_all, validate)

FAULT_STEP = 0
WARMUP = 100


def lr_factor(i: int) -> float:
    """LambdaLR factor for scheduler step i (0 before the first optimizer step)."""
    if i < WARMUP:
        return i / WARMUP
    return (1 - (i - WARMUP) / (TOTAL_STEPS - 1 - WARMUP)) ** 0.9


seed_all(0)
train_loader, val_loader = loaders(NUM_CLASSES, batch_size=BATCH)
model = TinySegNet(4, NUM_CLASSES, WIDTH)
criterion = nn.CrossEntropyLoss(ignore_index=-1)
optimizer = torch.optim.AdamW(model.parameters(), lr=6e-3, weight_decay=0.01)
scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
model.train()
for step, (epoch, (rgb, depth, label)) in enumerate(endless(train_loader), 1):
    loss = criterion(model(torch.cat([rgb, depth], 1)), label)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    scheduler.step()
    log_step(step, loss.item(), optimizer)
    if step % EVAL_EVERY == 0:
        log_miou(step, validate(model, val_loader))
    if step == TOTAL_STEPS:
        break
