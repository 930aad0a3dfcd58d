"""Replica of DFormer's utils/train.py loop on synthetic RGB-D data (13 classes, label
PNGs shifted by ``gt - 1`` so unlabeled is 255 = ``config.background``).

    python train.py [--fault none|collapse|no-update] [--sliding] [--epochs N]

* dict batches ``data`` / ``modal_x`` / ``label``;
* ``model(rgb, modal_x, label=gt)`` returns the loss in training, the logits in eval;
* ``utils/val_mm.py``: whole-image or sliding-window evaluation into ``utils/metrics_new.Metrics``;
* ``--fault collapse``: SGD lr 10 (meant 1e-2): one predicted class;
* ``--fault no-update``: ``metrics.update`` never called: the printed mIoU is 0.

Knows nothing about segwatch.
"""
import argparse
import os
import sys
import time
from types import SimpleNamespace

import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "faults"))  # the zoo's synthetic data

from _synth import loaders, seed_all  # noqa: E402

import utils.val_mm as val_mm  # noqa: E402
from utils.val_mm import evaluate  # noqa: E402

p = argparse.ArgumentParser()
p.add_argument("--fault", default="none", choices=["none", "collapse", "no-update"])
p.add_argument("--sliding", action="store_true")
p.add_argument("--epochs", type=int, default=4)
args = p.parse_args()

config = SimpleNamespace(num_classes=13, background=255, lr=6e-3, eval_crop_size=(24, 24),
                         eval_stride_rate=2 / 3)


def conv_bn(i, o, s=1):
    return nn.Sequential(nn.Conv2d(i, o, 3, s, 1, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True))


class DualEncoder(nn.Module):
    def __init__(self, w=24):
        super().__init__()
        self.rgb_stem = nn.Sequential(conv_bn(3, w), conv_bn(w, w, 2))
        self.x_stem = nn.Sequential(conv_bn(1, w // 2), conv_bn(w // 2, w // 2, 2))
        self.fuse = conv_bn(w + w // 2, w)

    def forward(self, rgb, x):
        return self.fuse(torch.cat([self.rgb_stem(rgb), self.x_stem(x)], 1))


class DecodeHead(nn.Module):
    def __init__(self, w, num_classes):
        super().__init__()
        self.squeeze = conv_bn(w, w)
        self.conv_seg = nn.Conv2d(w, num_classes, 1)

    def forward(self, feat):
        return self.conv_seg(self.squeeze(feat))


class EncoderDecoder(nn.Module):
    def __init__(self, cfg, criterion):
        super().__init__()
        self.backbone = DualEncoder(24)
        self.decode_head = DecodeHead(24, cfg.num_classes)
        self.criterion = criterion

    def encode_decode(self, rgb, modal_x):
        out = self.decode_head(self.backbone(rgb, modal_x))
        return F.interpolate(out, size=rgb.shape[-2:], mode="bilinear", align_corners=False)

    def forward(self, rgb, modal_x=None, label=None):
        out = self.encode_decode(rgb, modal_x)
        if label is not None:
            return self.criterion(out, label.long())
        return out


def main():
    seed_all(0)
    val_mm.SKIP_UPDATE = args.fault == "no-update"
    train_loader, val_loader = loaders(config.num_classes, n_train=128, n_val=16, style="dict",
                                       ignore_value=config.background)
    criterion = nn.CrossEntropyLoss(reduction="mean", ignore_index=config.background)
    model = EncoderDecoder(config, criterion)
    if args.fault == "collapse":
        optimizer = torch.optim.SGD(model.parameters(), lr=10.0, momentum=0.9)  # BUG: meant 1e-2
    else:
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=0.01)
    device = torch.device("cpu")
    best_miou = 0.0
    it = 0
    t0 = time.time()
    for epoch in range(1, args.epochs + 1):
        model.train()
        sum_loss = 0.0
        for idx, minibatch in enumerate(train_loader):
            it += 1
            imgs = minibatch["data"].to(device)
            gts = minibatch["label"].to(device)
            modal_xs = minibatch["modal_x"].to(device)
            loss = model(imgs, modal_xs, label=gts)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            sum_loss += loss.item()
            if it % 8 == 0:
                print(f"Epoch {epoch}/{args.epochs} Iter {idx + 1}/{len(train_loader)}: "
                      f"loss={loss.item():.4f} total_loss={sum_loss / (idx + 1):.4f}", flush=True)
        metric = evaluate(model, val_loader, config, device, sliding=args.sliding)
        ious, miou = metric.compute_iou()
        acc, macc = metric.compute_pixel_acc()
        best_miou = max(best_miou, miou)
        print(f"Epoch {epoch} validation result: mIoU {miou}, best mIoU {best_miou}", flush=True)
    print(f"done in {time.time() - t0:.1f}s", flush=True)


if __name__ == "__main__":
    main()
