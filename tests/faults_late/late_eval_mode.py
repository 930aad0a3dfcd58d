"""Fault: validation starts after warm-up (step 300, like mmseg's ``val_begin``) and
``validate()`` switches the model to eval mode without switching it back; the loop called
``model.train()`` once, before the first step.  From step 300 every backward runs with
BatchNorm on its running statistics.

Expected finding: model.eval_mode_in_training.  FAULT_STEP = 300.
``--healthy``: validate() restores train mode (the healthy twin).
"""
import torch
import torch.nn as nn

from _late import (BATCH, EVAL_EVERY, HEALTHY, NUM_CLASSES, TOTAL_STEPS, WIDTH, TinySegNet,
                   endless, loaders, log_miou, log_step, seed_all, validate)

FAULT_STEP = 300
VAL_BEGIN = 300

seed_all(0)
train_loader, val_loader = loaders(NUM_CLASSES, batch_size=BATCH)
model = TinySegNet(4, NUM_CLASSES, WIDTH)
criterion = nn.CrossEntropyLoss(ignore_index=-1)
optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
model.train()
for step, (epoch, (rgb, depth, label)) in enumerate(endless(train_loader), 1):
    loss = criterion(model(torch.cat([rgb, depth], 1)), label)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    log_step(step, loss.item(), optimizer)
    if step >= VAL_BEGIN and step % EVAL_EVERY == 0:
        # BUG: validate() leaves the model in eval mode and nothing calls model.train() again
        log_miou(step, validate(model, val_loader, restore_train=HEALTHY))
    if step == TOTAL_STEPS:
        break
