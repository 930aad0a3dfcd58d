"""Fault: a stage switch at step 300 sets the learning rate of stage 2 to 3.0 where 3e-3
was meant (x1000).  Within a few steps the features blow up: the evaluations at steps 350
and 400 predict one class only, the later ones 2-4 classes with one at 60-80% of the
pixels; the printed mIoU falls from ~94 to 3-12 and stays there.

Expected findings: pred.collapse and metric.miou_regressed.  FAULT_STEP = 300 (both are
judged at evaluation, the first one after the switch is at step 350).
``--healthy``: stage 2 runs at 3e-4 (the healthy twin).
"""
import torch
import torch.nn as nn

from _late import (BATCH, EVAL_EVERY, HEALTHY, NUM_CLASSES, TOTAL_STEPS, WIDTH, TinySegNet,
                   endless, loaders, log_miou, log_step, seed_all, validate)

FAULT_STEP = 300
STAGE2_BEGIN = 300
STAGE2_LR = 3e-4 if HEALTHY else 3.0  # BUG: meant a tenth of stage 1 (3e-4); 3.0 is x1000

seed_all(0)
train_loader, val_loader = loaders(NUM_CLASSES, batch_size=BATCH)
model = TinySegNet(4, NUM_CLASSES, WIDTH)
criterion = nn.CrossEntropyLoss(ignore_index=-1)
optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
model.train()
for step, (epoch, (rgb, depth, label)) in enumerate(endless(train_loader), 1):
    if step == STAGE2_BEGIN + 1:
        for group in optimizer.param_groups:
            group["lr"] = STAGE2_LR
    loss = criterion(model(torch.cat([rgb, depth], 1)), label)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    log_step(step, loss.item(), optimizer)
    if step % EVAL_EVERY == 0:
        log_miou(step, validate(model, val_loader))
    if step == TOTAL_STEPS:
        break
