"""Fault (slow burn, from the start): ``optimizer.zero_grad()`` is never called, so every
backward adds to the gradients of all earlier steps and each update follows the sum of
the whole run's gradients.  Training does not crash; it learns much worse than its twin.

Expected finding: optim.grads_accumulate (the gradients present before the first backward
after an optimizer step are non-zero; visible from step 2).  FAULT_STEP = 0.
``--healthy``: zero_grad() before every backward (the healthy twin).
"""
import torch
import torch.nn as nn

from _late import (BATCH, EVAL_EVERY, HEALTHY, NUM_CLASSES, TOTAL_STEPS, WIDTH, TinySegNet,
                   endless, loaders, log_miou, log_step, seed_all, validate)

FAULT_STEP = 0

seed_all(0)
train_loader, val_loader = loaders(NUM_CLASSES, batch_size=BATCH)
model = TinySegNet(4, NUM_CLASSES, WIDTH)
criterion = nn.CrossEntropyLoss(ignore_index=-1)
optimizer = torch.optim.SGD(model.parameters(), lr=1e-2, momentum=0.9)
model.train()
for step, (epoch, (rgb, depth, label)) in enumerate(endless(train_loader), 1):
    loss = criterion(model(torch.cat([rgb, depth], 1)), label)
    if HEALTHY:
        optimizer.zero_grad()
    # BUG: no optimizer.zero_grad() -- the gradients of every step pile up
    loss.backward()
    optimizer.step()
    log_step(step, loss.item(), optimizer)
    if step % EVAL_EVERY == 0:
        log_miou(step, validate(model, val_loader))
    if step == TOTAL_STEPS:
        break
