"""Fault (slow burn, from the start): ``StepLR(step_size=30, gamma=0.1)`` is an epoch
scheduler (x0.1 every 30 epochs) but the loop steps it every iteration: the learning rate
falls x0.1 every 30 steps, to 1e-3 of its peak by step 90 and to ~1e-20 at the end, while
training goes on.  The mIoU freezes at its early value.

Expected finding: optim.lr_schedule (the decay shape of an epoch scheduler stepped per
iteration).  FAULT_STEP = 90: the bug is there from step 0; by step 90 the LR has fallen
three decades in 90 iterations, which no per-iteration schedule does (the rule's other
path, LR below 1e-3 of peak for 100 steps, would only hold at step ~220).
``--healthy``: the scheduler steps once per epoch (40 iterations), as intended.
"""
import torch
import torch.nn as nn

from _late import (BATCH, EVAL_EVERY, HEALTHY, NUM_CLASSES, TOTAL_STEPS, WIDTH, TinySegNet,
                   endless, loaders, log_miou, log_step, seed_all, validate)

FAULT_STEP = 90

seed_all(0)
train_loader, val_loader = loaders(NUM_CLASSES, batch_size=BATCH)
model = TinySegNet(4, NUM_CLASSES, WIDTH)
criterion = nn.CrossEntropyLoss(ignore_index=-1)
optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=30, gamma=0.1)
model.train()
last_epoch = 1
for step, (epoch, (rgb, depth, label)) in enumerate(endless(train_loader), 1):
    if HEALTHY and epoch != last_epoch:
        scheduler.step()
        last_epoch = epoch
    loss = criterion(model(torch.cat([rgb, depth], 1)), label)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    if not HEALTHY:
        scheduler.step()  # BUG: an epoch scheduler stepped every iteration
    log_step(step, loss.item(), optimizer)
    if step % EVAL_EVERY == 0:
        log_miou(step, validate(model, val_loader))
    if step == TOTAL_STEPS:
        break
