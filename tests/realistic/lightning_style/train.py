"""A Lightning segmentation project in the shape people write them (a ``LightningDataModule``,
a ``LightningModule`` with ``training_step`` / ``validation_step`` / ``configure_optimizers``,
torchmetrics for the mIoU, a step-wise LR schedule, ``Trainer(max_steps=...)``).  It knows
nothing about segwatch.

    python train.py [--max-steps 48] [--lr 3e-3] [--fault none|no-ignore-index]

Labels: 0..C-1 with 255 = unlabeled (Cityscapes' convention).  ``--fault no-ignore-index``:
the loss and the metric are built without ``ignore_index`` (the defaults), as in a module
copied from a dataset that had no unlabeled pixels.  On CPU the loss raises at the first
step (``Target 255 is out of bounds``); on a GPU it is a device-side assert.
"""
import argparse
import warnings

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from torchmetrics.classification import MulticlassJaccardIndex

import lightning as L

CLASSES = ["road", "sidewalk", "building", "vegetation", "sky", "car"]
IGNORE = 255
SIZE = 48


class StreetScenes(Dataset):
    """Synthetic street scenes: sky on top, road at the bottom, buildings, trees and cars as
    blocks; a colour per class plus noise, 8x8 patches of unlabeled pixels."""

    def __init__(self, n, seed):
        C = len(CLASSES)
        colours = np.random.default_rng(7).uniform(0, 1, (C, 3))
        rng = np.random.default_rng(seed)
        self.items = []
        for _ in range(n):
            lab = np.full((SIZE, SIZE), 2, np.int64)           # building
            lab[: SIZE // 4] = 4                                # sky
            lab[3 * SIZE // 4:] = 0                             # road
            lab[3 * SIZE // 4: 3 * SIZE // 4 + 4] = 1           # sidewalk
            for _ in range(int(rng.integers(1, 4))):
                c = int(rng.choice([3, 5]))
                h, w = (int(v) for v in rng.integers(6, 18, 2))
                y, x = int(rng.integers(SIZE // 4, SIZE - h)), int(rng.integers(0, SIZE - w))
                lab[y:y + h, x:x + w] = c
            img = colours[lab] + rng.normal(0, 0.06, (SIZE, SIZE, 3))
            unlabeled = np.kron(rng.random((SIZE // 8, SIZE // 8)) < 0.08, np.ones((8, 8), bool))
            lab[unlabeled] = IGNORE
            self.items.append((torch.from_numpy((img.transpose(2, 0, 1) - 0.5) / 0.25).float(),
                               torch.from_numpy(lab)))

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


class StreetDataModule(L.LightningDataModule):
    def __init__(self, batch_size=8):
        super().__init__()
        self.batch_size = batch_size

    def setup(self, stage=None):
        self.train_set = StreetScenes(96, seed=0)
        self.val_set = StreetScenes(16, seed=1000)

    def train_dataloader(self):
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True, num_workers=0, drop_last=True)

    def val_dataloader(self):
        return DataLoader(self.val_set, batch_size=self.batch_size, shuffle=False, num_workers=0)


def conv_bn(cin, cout, stride=1):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class TinyDeepLab(nn.Module):
    """An encoder at 1/4 resolution and a 1x1 classifier; logits upsampled in forward."""

    def __init__(self, num_classes, width=24):
        super().__init__()
        self.encoder = nn.Sequential(conv_bn(3, width), conv_bn(width, width, 2), conv_bn(width, 2 * width),
                                     conv_bn(2 * width, 2 * width, 2), conv_bn(2 * width, 2 * width))
        self.classifier = nn.Conv2d(2 * width, num_classes, 1)

    def forward(self, x):
        out = self.classifier(self.encoder(x))
        return F.interpolate(out, size=x.shape[-2:], mode="bilinear", align_corners=False)


class SegModule(L.LightningModule):
    def __init__(self, lr=3e-3, max_steps=48, ignore_index=IGNORE):
        super().__init__()
        self.save_hyperparameters()
        C = len(CLASSES)
        self.model = TinyDeepLab(C)
        if ignore_index is None:   # FAULT: the defaults (-100 for the loss, none for the metric)
            self.criterion = nn.CrossEntropyLoss()
            self.val_iou = MulticlassJaccardIndex(num_classes=C, average="macro")
        else:
            self.criterion = nn.CrossEntropyLoss(ignore_index=ignore_index)
            self.val_iou = MulticlassJaccardIndex(num_classes=C, average="macro", ignore_index=ignore_index)

    def forward(self, x):
        return self.model(x)

    def training_step(self, batch, batch_idx):
        images, masks = batch
        loss = self.criterion(self(images), masks)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        images, masks = batch
        logits = self(images)
        self.log("val/loss", self.criterion(logits, masks))
        self.val_iou.update(logits.argmax(1), masks)

    def on_validation_epoch_end(self):
        miou = self.val_iou.compute()
        self.log("val/mIoU", miou)
        self.val_iou.reset()
        if not self.trainer.sanity_checking:
            print(f"step {self.global_step}: val/mIoU {float(miou):.4f}", flush=True)

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=1e-4)
        # warm-up from 0 over the first steps, then poly decay to 0
        warm, total = 4, self.hparams.max_steps

        def factor(step):
            return step / warm if step < warm else max(0.0, 1 - (step - warm) / max(1, total - warm)) ** 0.9

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--max-steps", type=int, default=48)
    p.add_argument("--val-every", type=int, default=12)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--fault", default="none", choices=["none", "no-ignore-index"])
    args = p.parse_args()
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    L.seed_everything(0, workers=True)
    module = SegModule(lr=args.lr, max_steps=args.max_steps,
                       ignore_index=None if args.fault == "no-ignore-index" else IGNORE)
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=args.max_steps, val_check_interval=args.val_every,
                        check_val_every_n_epoch=None, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=1,
                        deterministic=True)
    trainer.fit(module, datamodule=StreetDataModule())


if __name__ == "__main__":
    main()
