"""Healthy trap: gradient accumulation over k=4 micro-batches of 1 (zero_grad every 4
backward passes, the loss divided by 4), gradient clipping at norm 1.0 and a cosine LR
per optimizer step down to 0 at the end.  600 optimizer steps = 2400 backward passes.
Between two resets the gradients do pile up: on purpose.

Expected findings: none.  FAULT_STEP = 0 (no fault).
"""
import torch
import torch.nn as nn

from _late import (EVAL_EVERY, NUM_CLASSES, TOTAL_STEPS, WIDTH, TinySegNet, endless, loaders,
                   log_miou, log_step, seed_all, validate)

FAULT_STEP = 0
ACCUM = 4

seed_all(0)
train_loader, val_loader = loaders(NUM_CLASSES, batch_size=1)
model = TinySegNet(4, NUM_CLASSES, WIDTH)
criterion = nn.CrossEntropyLoss(ignore_index=-1)
optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=TOTAL_STEPS, eta_min=0.0)
model.train()
opt_step = 0
for micro, (epoch, (rgb, depth, label)) in enumerate(endless(train_loader), 1):
    loss = criterion(model(torch.cat([rgb, depth], 1)), label) / ACCUM
    loss.backward()
    if micro % ACCUM:
        continue
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad()
    opt_step += 1
    log_step(opt_step, loss.item() * ACCUM, optimizer)
    if opt_step % EVAL_EVERY == 0:
        log_miou(opt_step, validate(model, val_loader))
    if opt_step == TOTAL_STEPS:
        break
