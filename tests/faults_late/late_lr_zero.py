"""Fault: a MultiStepLR with ``gamma=0.0`` (someone meant 0.1) sets the learning rate to 0
at its first milestone, step 300.  Training goes on for 300 more steps that change
nothing; the loss and the mIoU stay where they were.

Expected finding: optim.lr_suspicious or optim.params_not_stepped (or optim.lr_schedule).
FAULT_STEP = 300.  ``--healthy``: gamma 0.1 (the healthy twin).
"""
import torch
import torch.nn as nn

from _late import (BATCH, EVAL_EVERY, HEALTHY, NUM_CLASSES, TOTAL_STEPS, WIDTH, TinySegNet,
                   endless, loaders, log_miou, log_step, seed_all, validate)

FAULT_STEP = 300

seed_all(0)
train_loader, val_loader = loaders(NUM_CLASSES, batch_size=BATCH)
model = TinySegNet(4, NUM_CLASSES, WIDTH)
criterion = nn.CrossEntropyLoss(ignore_index=-1)
optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
gamma = 0.1 if HEALTHY else 0.0  # BUG: meant 0.1
scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[300, 450], gamma=gamma)
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
