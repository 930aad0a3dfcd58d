"""Fault (slow burn, from the start): the model ends in a softmax (its author wanted
probabilities at inference) and training puts ``CrossEntropyLoss`` on top, which applies
log-softmax again.  The loss is squashed into a narrow band near log(C) and learns slowly.

Expected finding: model.output_is_probability (the loss receives a tensor in [0, 1] that
sums to 1 over the class dimension; visible from step 1).  FAULT_STEP = 0.
``--healthy``: the model returns logits (the healthy twin).
"""
import torch
import torch.nn as nn

from _late import (BATCH, EVAL_EVERY, HEALTHY, NUM_CLASSES, TOTAL_STEPS, WIDTH, TinySegNet,
                   endless, loaders, log_miou, log_step, seed_all, validate)

FAULT_STEP = 0


class ProbSegNet(TinySegNet):
    def forward(self, x):
        logits = super().forward(x)
        return logits if HEALTHY else logits.softmax(dim=1)  # BUG: CrossEntropyLoss wants logits


seed_all(0)
train_loader, val_loader = loaders(NUM_CLASSES, batch_size=BATCH)
model = ProbSegNet(4, NUM_CLASSES, WIDTH)
criterion = nn.CrossEntropyLoss(ignore_index=-1)
optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
model.train()
for step, (epoch, (rgb, depth, label)) in enumerate(endless(train_loader), 1):
    loss = criterion(model(torch.cat([rgb, depth], 1)), label)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    log_step(step, loss.item(), optimizer)
    if step % EVAL_EVERY == 0:
        log_miou(step, validate(model, val_loader))
    if step == TOTAL_STEPS:
        break
