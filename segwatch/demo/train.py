"""segwatch demo training: a tiny RGB-D semantic segmentation run on synthetic
SUNRGBD-like data (37 classes, unlabeled = -1, SUNRGBD-like class frequencies), written
like the DFormer-style code of the guide:

    for imgs, modal_xs, gts, text_feats in train_loader:
        loss = model(imgs, modal_xs, label=gts, text_features=text_feats)

and evaluated with the guide's Metrics class (hist / update / compute_iou, NaN -> 0,
mean over all classes).  It is plain PyTorch and knows nothing about segwatch; run it
under segwatch with ``segwatch demo [--fault NAME]``, or alone with
``python train.py --fault none``.  CPU only, about a minute.

Faults (``--fault``):
  collapse   at iteration 150 the learning rate jumps x300 (a resumed schedule reads
             the lr in the wrong units): the network dies and predicts one class
  labels     the label transform forgets ``gt - 1``: labels run 0..37 for 37 classes
             (CrossEntropyLoss will crash with "Target 37 is out of bounds")
  nan        depth holes are stored as NaN and training runs under AMP: the loss is NaN,
             the GradScaler skips every optimizer step, the mIoU freezes
  eval-mode  validate() calls model.eval() and nothing switches back to train()
  ignore255  labels are shifted as uint8 so unlabeled wraps to 255 (the loss ignores
             255) while the segwatch config says ignore -1
  none       a healthy run
"""
from __future__ import annotations

import argparse
import time
from typing import Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

NUM_CLASSES = 37
CLASS_NAMES = [
    "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window",
    "bookshelf", "picture", "counter", "blinds", "desk", "shelves", "curtain", "dresser",
    "pillow", "mirror", "floor_mat", "clothes", "ceiling", "books", "fridge", "tv",
    "paper", "towel", "shower_curtain", "box", "whiteboard", "person", "night_stand",
    "toilet", "sink", "lamp", "bathtub", "bag",
]
# approximate SUNRGBD pixel shares of the object classes (wall and floor are the layout)
OBJ_FREQ = np.array([
    4.0, 6.0, 8.0, 3.5, 6.5, 3.0, 2.5, 2.0, 1.8, 1.5, 1.2, 1.2, 1.1, 1.0, 1.0, 0.9, 0.8,
    0.8, 0.7, 0.6, 2.0, 0.5, 0.5, 0.4, 0.4, 0.4, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.25,
    0.2, 0.2,
])
SIZE = 64
MEAN, STD = 0.5, 0.25


# --------------------------------------------------------------------------- data
def _palette(seed=1234):
    rng = np.random.RandomState(seed)
    colors = rng.uniform(0.05, 0.95, size=(NUM_CLASSES, 3)).astype(np.float32)
    depth = np.linspace(0.1, 0.95, NUM_CLASSES).astype(np.float32)
    rng.shuffle(depth)
    stripes = rng.randint(0, 4, size=NUM_CLASSES)
    return colors, depth, stripes


def _scene(rng):
    """One synthetic indoor view: label PNG (uint8, 0 = unlabeled, 1..37), rgb, depth."""
    lab = np.zeros((SIZE, SIZE), dtype=np.int64)
    lab[rng.randint(int(SIZE * 0.55), int(SIZE * 0.8)):, :] = 1
    p = OBJ_FREQ / OBJ_FREQ.sum()
    for _ in range(rng.randint(3, 8)):
        c = 2 + rng.choice(len(p), p=p)
        h, w = rng.randint(SIZE // 8, SIZE // 2), rng.randint(SIZE // 8, SIZE // 2)
        y, x = rng.randint(0, SIZE - h), rng.randint(0, SIZE - w)
        if rng.rand() < 0.5:
            lab[y:y + h, x:x + w] = c
        else:
            yy, xx = np.ogrid[:SIZE, :SIZE]
            lab[((yy - y - h / 2) / (h / 2)) ** 2 + ((xx - x - w / 2) / (w / 2)) ** 2 <= 1] = c
    colors, depth_lv, stripes = _palette()
    xx = np.arange(SIZE)[None, :].repeat(SIZE, 0)
    yy = np.arange(SIZE)[:, None].repeat(SIZE, 1)
    s = stripes[lab]
    tex = np.where(s == 1, xx % 4 < 2, np.where(s == 2, yy % 4 < 2, np.where(s == 3, (xx + yy) % 4 < 2, 0.5)))
    rgb = colors[lab].transpose(2, 0, 1) + 0.12 * (tex.astype(np.float32) - 0.5)[None]
    rgb = np.clip(rgb + rng.normal(0, 0.06, rgb.shape), 0, 1).astype(np.float32)
    depth = np.clip(depth_lv[lab][None] + rng.normal(0, 0.03, (1, SIZE, SIZE)), 0, 1).astype(np.float32)
    png = (lab + 1).astype(np.uint8)
    for _ in range(rng.randint(1, 3)):  # unannotated regions
        h, w = rng.randint(2, SIZE // 4), rng.randint(4, SIZE // 2)
        y, x = rng.randint(0, SIZE - h), rng.randint(0, SIZE - w)
        png[y:y + h, x:x + w] = 0
    return png, rgb, depth


class SUNRGBDSynth(Dataset):
    def __init__(self, n, seed, fault="none"):
        rng = np.random.RandomState(seed)
        self.items = [_scene(rng) for _ in range(n)]
        self.fault = fault
        self.holes = [rng.rand(1, SIZE, SIZE) < 0.02 if rng.rand() < 0.8 else None for _ in range(n)]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        png, rgb, depth = self.items[i]
        if self.fault == "labels":
            gt = png.astype(np.int64)  # forgot the shift: 0..37
        elif self.fault == "ignore255":
            gt = (png - 1).astype(np.int64)  # uint8 arithmetic: 0 - 1 wraps to 255
        else:
            gt = png.astype(np.int64) - 1  # 0 (unlabeled) -> -1, classes -> 0..36
        depth = depth.copy()
        if self.fault == "nan" and self.holes[i] is not None:
            depth[self.holes[i]] = np.nan  # missing sensor returns, never filled
        imgs = torch.from_numpy((rgb - MEAN) / STD)
        modal_xs = torch.from_numpy((depth - MEAN) / STD)
        text_feats = torch.zeros(8)  # the text branch is unused in this demo
        return imgs, modal_xs, torch.from_numpy(gt), text_feats


# --------------------------------------------------------------------------- model
def conv_bn(i, o, s=1, d=1):
    return nn.Sequential(nn.Conv2d(i, o, 3, s, d, dilation=d, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True))


class DualBackbone(nn.Module):
    def __init__(self, w=32):
        super().__init__()
        self.rgb = nn.Sequential(conv_bn(3, w), conv_bn(w, w, 2))
        self.depth = nn.Sequential(conv_bn(1, w // 2), conv_bn(w // 2, w // 2, 2))
        self.fuse = nn.Sequential(conv_bn(w + w // 2, w), conv_bn(w, w, d=2))

    def forward(self, rgb, x):
        return self.fuse(torch.cat([self.rgb(rgb), self.depth(x)], 1))


class DecodeHead(nn.Module):
    def __init__(self, w, num_classes):
        super().__init__()
        self.squeeze = conv_bn(w, w)
        self.dropout = nn.Dropout2d(0.1)
        self.conv_seg = nn.Conv2d(w, num_classes, 1)

    def forward(self, feat):
        return self.conv_seg(self.dropout(self.squeeze(feat)))


class EncoderDecoder(nn.Module):
    def __init__(self, num_classes, criterion):
        super().__init__()
        self.backbone = DualBackbone(32)
        self.decode_head = DecodeHead(32, num_classes)
        self.criterion = criterion

    def forward(self, rgb, modal_x, label=None, text_features=None):
        out = self.decode_head(self.backbone(rgb, modal_x))
        out = F.interpolate(out, size=rgb.shape[-2:], mode="bilinear", align_corners=False)
        if label is not None:
            return self.criterion(out, label.long())
        return out


# --------------------------------------------------------------------------- metric
class Metrics:
    def __init__(self, num_classes: int, ignore_label: int, device):
        self.num_classes = num_classes
        self.ignore_label = ignore_label
        self.hist = torch.zeros(num_classes, num_classes).to(device)

    def update(self, pred, target) -> None:
        pred = pred.argmax(dim=1)
        keep = (target != self.ignore_label) & (target >= 0) & (target < self.num_classes)
        self.hist += torch.bincount(target[keep] * self.num_classes + pred[keep],
                                    minlength=self.num_classes ** 2).view(self.num_classes, self.num_classes)

    def compute_iou(self) -> Tuple[list, float]:
        ious = self.hist.diag() / (self.hist.sum(0) + self.hist.sum(1) - self.hist.diag())
        ious[ious.isnan()] = 0.0
        miou = ious.mean().item()
        ious *= 100
        miou *= 100
        return ious.cpu().numpy().round(2).tolist(), round(miou, 2)


@torch.no_grad()
def validate(model, loader, ignore_label, amp, restore_train=True):
    model.eval()
    metrics = Metrics(NUM_CLASSES, ignore_label, "cpu")
    for imgs, modal_xs, gts, _ in loader:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            preds = model(imgs, modal_xs).float().softmax(dim=1)
        metrics.update(preds, gts)
    if restore_train:
        model.train()
    return metrics.compute_iou()


# --------------------------------------------------------------------------- main
def main(argv=None):
    ap = argparse.ArgumentParser(description="segwatch demo: tiny RGB-D segmentation training")
    ap.add_argument("--fault", default="collapse",
                    choices=["collapse", "labels", "nan", "eval-mode", "ignore255", "none"])
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--iters-per-epoch", type=int, default=100)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    fault = args.fault
    amp = fault == "nan"
    background = 255 if fault == "ignore255" else -1

    print(f"demo: SUNRGBD-like synthetic RGB-D, {NUM_CLASSES} classes, fault={fault}", flush=True)
    n_train = args.iters_per_epoch * args.batch_size
    train_set = SUNRGBDSynth(min(n_train, 400), args.seed, fault)
    val_set = SUNRGBDSynth(48, args.seed + 1000, fault)
    train_loader = DataLoader(train_set, batch_size=args.batch_size, shuffle=True, drop_last=True,
                              generator=torch.Generator().manual_seed(args.seed))
    val_loader = DataLoader(val_set, batch_size=args.batch_size)

    criterion = nn.CrossEntropyLoss(reduction="mean", ignore_index=background)
    model = EncoderDecoder(NUM_CLASSES, criterion)
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=1e-4)
    scaler = torch.amp.GradScaler("cpu", enabled=amp)
    total = args.epochs * args.iters_per_epoch
    warmup = 30

    def lr_at(it):
        if it < warmup:
            lr = args.lr * (0.1 + 0.9 * it / warmup)
        else:
            lr = args.lr * (1 - (it - warmup) / (total - warmup + 1)) ** 0.9
        if fault == "collapse" and it >= 150:
            lr *= 300  # the bug: a resumed schedule reads the lr in the wrong units
        return lr

    it = 0
    t0 = time.time()
    model.train()
    for epoch in range(1, args.epochs + 1):
        sum_loss = 0.0
        n = 0
        while n < args.iters_per_epoch:
            for imgs, modal_xs, gts, text_feats in train_loader:
                if n >= args.iters_per_epoch:
                    break
                for g in optimizer.param_groups:
                    g["lr"] = lr_at(it)
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
                    loss = model(imgs, modal_xs, label=gts, text_features=text_feats)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                it += 1
                n += 1
                sum_loss += loss.item()
                if it % 10 == 0:
                    print(f"iter {it}/{total} loss {loss.item():.4f} lr {optimizer.param_groups[0]['lr']:.4g}",
                          flush=True)
        ious, miou = validate(model, val_loader, background, amp, restore_train=fault != "eval-mode")
        print(f"epoch {epoch}: mIoU: {miou:.2f}  (mean loss {sum_loss / max(n, 1):.4f}, "
              f"{time.time() - t0:.0f}s)", flush=True)
    print(f"done: {it} iterations in {time.time() - t0:.1f}s", flush=True)


if __name__ == "__main__":
    main()
