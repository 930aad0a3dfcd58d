"""A tiny PyTorch Lightning segmentation training on synthetic RGB-D data (13 classes,
ignore -1).  The module's forward predicts at half resolution (like most real models);
``training_step`` upsamples for the loss, ``validation_step`` accumulates the guide's
confusion matrix and returns ``{"logits", "labels"}`` (full size); ``val_miou`` (a fraction)
is logged at the end of each validation epoch.

    python lightning_train.py [--fault none|collapse] [--callback] [--epochs N]

``--fault collapse``: class weights loaded as a one-hot vector, so the model learns to predict
class 0 everywhere.  ``--callback`` adds ``segwatch.adapters.lightning.SegwatchCallback`` by hand (the only line
that knows segwatch); without it the script is unmodified and relies on ``adapter: auto``.
"""
import argparse
import os
import sys
import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "faults"))
from _synth import loaders, seed_all  # noqa: E402

try:
    import lightning.pytorch as pl
except ImportError:  # the older package name
    import pytorch_lightning as pl

p = argparse.ArgumentParser()
p.add_argument("--fault", default="none", choices=["none", "collapse"])
p.add_argument("--callback", action="store_true")
p.add_argument("--epochs", type=int, default=4)
args = p.parse_args()
warnings.filterwarnings("ignore")

C = 13


class Net(nn.Module):
    def __init__(self, w=24):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(4, w, 3, 1, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
                                  nn.Conv2d(w, w, 3, 2, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
                                  nn.Conv2d(w, w, 3, 1, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True))
        self.head = nn.Conv2d(w, C, 1)

    def forward(self, x):
        return self.head(self.stem(x))   # [B, C, H/2, W/2]


class SegModule(pl.LightningModule):
    def __init__(self, lr):
        super().__init__()
        self.net = Net()
        self.lr = lr
        weight = None
        if args.fault == "collapse":
            # BUG: class weights meant as inverse frequencies, loaded as a one-hot vector:
            # only class 0 pixels carry loss, so predicting class 0 everywhere is optimal
            weight = torch.zeros(C)
            weight[0] = 1.0
        self.crit = nn.CrossEntropyLoss(weight=weight, ignore_index=-1)
        self.register_buffer("hist", torch.zeros(C, C, dtype=torch.long), persistent=False)

    def forward(self, rgb, depth):
        return self.net(torch.cat([rgb, depth], 1))

    def training_step(self, batch, batch_idx):
        rgb, depth, label = batch
        logits = F.interpolate(self(rgb, depth), size=label.shape[-2:], mode="bilinear", align_corners=False)
        loss = self.crit(logits, label)
        self.log("train_loss", loss)
        return loss

    def on_validation_epoch_start(self):
        self.hist.zero_()

    def validation_step(self, batch, batch_idx):
        rgb, depth, label = batch
        logits = F.interpolate(self(rgb, depth), size=label.shape[-2:], mode="bilinear", align_corners=False)
        pred = logits.argmax(1)
        k = (label >= 0) & (label < C)
        self.hist += torch.bincount(C * label[k] + pred[k], minlength=C * C).view(C, C)
        return {"logits": logits, "labels": label}

    def on_validation_epoch_end(self):
        h = self.hist.double()
        iou = h.diag() / (h.sum(0) + h.sum(1) - h.diag())
        iou[iou.isnan()] = 0.0
        miou = float(iou.mean())
        self.log("val_miou", miou)
        if not self.trainer.sanity_checking:
            print(f"epoch {self.current_epoch}: val_miou {miou:.4f}", flush=True)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.lr)


def main():
    seed_all(0)
    train_loader, val_loader = loaders(C, n_train=128, n_val=16)
    callbacks = []
    if args.callback:
        from segwatch.adapters.lightning import SegwatchCallback
        callbacks.append(SegwatchCallback())
    trainer = pl.Trainer(max_epochs=args.epochs, accelerator="cpu", devices=1, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         callbacks=callbacks, num_sanity_val_steps=2)
    trainer.fit(SegModule(1e-2), train_loader, val_loader)
    print("callbacks:", ",".join(type(c).__name__ for c in trainer.callbacks), flush=True)


if __name__ == "__main__":
    main()
