"""Healthy trap: the model converges by step ~250; the LR then drops x0.1 at steps 300
and 450 (MultiStepLR), so the last evaluations print (nearly) the same mIoU.  A flat mIoU
after convergence is not a stuck metric: the weights keep changing a little.

Expected findings: none.  FAULT_STEP = 0 (no fault).
"""
import torch
import torch.nn as nn

from _late import (BATCH, EVAL_EVERY, NUM_CLASSES, TOTAL_STEPS, WIDTH, TinySegNet, endless,
                   loaders, log_miou, log_step, seed_all, validate)

FAULT_STEP = 0

seed_all(0)
train_loader, val_loader = loaders(NUM_CLASSES, batch_size=BATCH)
model = TinySegNet(4, NUM_CLASSES, WIDTH)
criterion = nn.CrossEntropyLoss(ignore_index=-1)
optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[300, 450], gamma=0.1)
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
