"""A tiny segmentation training used by the shim tests (runs in a few seconds on CPU).

Options select the faults and shapes the tests need. Written to behave like a real training
script: a DataLoader, a model, a loss, an optimizer, an evaluation loop.
"""
import argparse
import json
import logging
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

p = argparse.ArgumentParser()
p.add_argument("--classes", type=int, default=5)
p.add_argument("--head", type=int, default=None, help="output channels (default = classes)")
p.add_argument("--steps", type=int, default=12)
p.add_argument("--batch", type=int, default=2)
p.add_argument("--size", type=int, default=32)
p.add_argument("--labels", default="ok", help="ok | oor | ignore255")
p.add_argument("--dict-batch", action="store_true", help="DFormer-style dict batches {'data','modal_x','label'}")
p.add_argument("--loss-in-model", action="store_true", help="model(rgb, depth, label=gt) returns the loss in training")
p.add_argument("--nan-at", type=int, default=None, help="loss becomes NaN from this step on")
p.add_argument("--amp-nan", action="store_true", help="GradScaler('cpu') with a NaN in the input")
p.add_argument("--eval", action="store_true")
p.add_argument("--eval-raise", action="store_true", help="evaluation raises; the script logs and swallows it")
p.add_argument("--ref-out", default=None, help="write the script's own confusion matrix here")
p.add_argument("--lsd-prefix", action="store_true", help="load a 'module.'-prefixed state dict with strict=False")
p.add_argument("--exit", type=int, default=None)
p.add_argument("--raise-at-end", action="store_true")
p.add_argument("--info-out", default=None)
p.add_argument("--val-batches", type=int, default=3)
args = p.parse_args()

torch.manual_seed(0)
torch.set_num_threads(1)
C = args.classes
HEAD = args.head or C
S = args.size

if args.info_out:
    with open(args.info_out, "w") as f:
        json.dump({"argv": sys.argv, "name": __name__, "path0": sys.path[0]}, f)


class Blobs(Dataset):
    def __init__(self, n, seed):
        g = torch.Generator().manual_seed(seed)
        self.items = []
        for _ in range(n):
            lab = torch.zeros(S, S, dtype=torch.long)
            for _ in range(3):
                c = int(torch.randint(0, C, (1,), generator=g))
                y, x = torch.randint(0, S - 8, (2,), generator=g).tolist()
                lab[y:y + 10, x:x + 10] = c
            img = torch.stack([lab.float() / C, (lab % 2).float(), torch.rand(S, S, generator=g) * 0.1])
            if args.labels == "oor":
                lab[:2, :] = C               # a value == num_classes
            elif args.labels == "ignore255":
                lab[:, :3] = 255
            depth = lab.float()[None] / C
            self.items.append((img, depth, lab))

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        img, depth, lab = self.items[i]
        if args.dict_batch:
            return {"data": img, "modal_x": depth, "label": lab}
        return img, lab


class Head(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(16, 16, 3, padding=1)
        self.conv_seg = nn.Conv2d(16, HEAD, 1)

    def forward(self, x):
        return self.conv_seg(F.relu(self.conv(x)))


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(4 if args.dict_batch else 3, 16, 3, stride=2, padding=1),
                                  nn.BatchNorm2d(16), nn.ReLU())
        self.decode_head = Head()
        self.criterion = nn.CrossEntropyLoss(ignore_index=255)

    def forward(self, rgb, depth=None, label=None):
        x = torch.cat([rgb, depth], 1) if depth is not None else rgb
        out = self.decode_head(self.stem(x))           # [B, HEAD, S/2, S/2]
        if args.loss_in_model and label is not None:
            out = F.interpolate(out, size=label.shape[-2:], mode="bilinear", align_corners=False)
            return self.criterion(out, label.clamp(max=HEAD - 1) if args.labels == "oor" else label)
        return F.interpolate(out, size=rgb.shape[-2:], mode="bilinear", align_corners=False)


model = Net()
if args.lsd_prefix:
    sd = {"module." + k: v for k, v in model.state_dict().items()}
    res = model.load_state_dict(sd, strict=False)
    print("load_state_dict:", len(res.missing_keys), "missing", len(res.unexpected_keys), "unexpected")

train = DataLoader(Blobs(args.steps * args.batch, 1), batch_size=args.batch, shuffle=False)
val = DataLoader(Blobs(args.val_batches * args.batch, 2), batch_size=args.batch)
opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
scaler = torch.amp.GradScaler("cpu") if args.amp_nan else None
crit = nn.CrossEntropyLoss(ignore_index=255)


def split(batch):
    if args.dict_batch:
        return batch["data"], batch["modal_x"], batch["label"]
    return batch[0], None, batch[1]


def evaluate():
    model.eval()
    ref = torch.zeros(C, C, dtype=torch.long)
    with torch.no_grad():
        for i, batch in enumerate(val):
            rgb, depth, lab = split(batch)
            out = model(rgb, depth) if depth is not None else model(rgb)
            pred = out.argmax(1)
            if args.eval_raise and i == 1:
                bad = torch.zeros(3)[torch.tensor([7])]     # IndexError inside the loop
            m = (lab >= 0) & (lab < C)
            ref += torch.bincount(lab[m] * C + pred[m].clamp(max=C - 1), minlength=C * C).reshape(C, C)
    model.train()
    return ref


step = 0
for epoch in range(1):
    for batch in train:
        rgb, depth, lab = split(batch)
        if args.amp_nan:
            rgb = rgb.clone()
            rgb[0, 0, 0, 0] = float("nan")
        if args.loss_in_model:
            loss = model(rgb, depth, label=lab)
        else:
            out = model(rgb, depth) if depth is not None else model(rgb)
            tgt = lab.clamp(max=HEAD - 1) if args.labels == "oor" else lab
            loss = crit(out, tgt)
        if args.nan_at is not None and step + 1 >= args.nan_at:
            loss = loss * float("nan")
        opt.zero_grad()
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            opt.step()
        step += 1

if args.eval:
    try:
        ref = evaluate()
        if args.ref_out:
            with open(args.ref_out, "w") as f:
                json.dump(ref.tolist(), f)
        print("mIoU: 12.34")
    except Exception:
        logging.exception("evaluation failed")
        print("mIoU: 12.34 (stale)")

if args.raise_at_end:
    raise ValueError("boom at the end")
if args.exit is not None:
    sys.exit(args.exit)
