"""Healthy trap: the backbone is frozen on purpose (``requires_grad_(False)``) and its
BatchNorm layers are kept in eval mode (mmseg's ``norm_eval=True``); only the decode head
trains.  About 60% of the parameters never get a gradient and three BatchNorm modules are
in eval mode during every backward: both intended.

Expected findings: none at error level.  FAULT_STEP = 0 (no fault).
"""
import torch
import torch.nn as nn

from _late import (BATCH, EVAL_EVERY, NUM_CLASSES, TOTAL_STEPS, WIDTH, TinySegNet, endless,
                   loaders, log_miou, log_step, seed_all, validate)

FAULT_STEP = 0


def conv_bn(i, o):
    return nn.Sequential(nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True))


class FrozenBackboneNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = TinySegNet(4, NUM_CLASSES, 2 * WIDTH).backbone  # stands in for a pretrained encoder
        self.backbone.requires_grad_(False)
        self.decode_head = nn.Sequential(conv_bn(2 * WIDTH, WIDTH), nn.Conv2d(WIDTH, NUM_CLASSES, 1))

    def train(self, mode: bool = True):
        super().train(mode)
        if mode:
            self.backbone.eval()  # norm_eval: keep the frozen encoder's BN statistics
        return self

    def forward(self, x):
        return self.decode_head(self.backbone(x))


seed_all(0)
train_loader, val_loader = loaders(NUM_CLASSES, batch_size=BATCH)
model = FrozenBackboneNet()
criterion = nn.CrossEntropyLoss(ignore_index=-1)
optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
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
