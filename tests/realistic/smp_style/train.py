"""A training in the shape of a segmentation_models.pytorch (smp) user script, scaled down
to a CPU test (smp itself needs torchvision/timm, which do not load here, so the model is
written out with smp's structure).  It knows nothing about segwatch.

- ``Unet(encoder_name=..., encoder_weights="imagenet", classes=C)``: ``model.encoder``,
  ``model.decoder``, ``model.segmentation_head``; the encoder's "imagenet" weights come from
  a checkpoint file (written on first use here, standing in for the download);
- the encoder is frozen on purpose (``requires_grad = False``; the optimizer gets only the
  trainable parameters): a healthy, common transfer-learning setup;
- Dice + CE loss, Adam, a CosineAnnealingLR, per-epoch validation printing ``mIoU``.

``--fault prefix``: the checkpoint was saved from an ``nn.DataParallel`` model (keys
``module.*``) and is loaded with ``strict=False``: nothing matches, nothing is loaded, and
the frozen encoder stays random.  segwatch must raise model.pretrained_not_loaded.
"""
import argparse
import os

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

CLASSES = ["background", "road", "car", "building", "tree", "person"]


def conv_bn_relu(i, o, stride=1):
    return nn.Sequential(nn.Conv2d(i, o, 3, stride, 1, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True))


class TinyResNetEncoder(nn.Module):
    """Feature maps at strides 1, 2, 4, 8 (smp encoders return a list of stages)."""

    out_channels = (3, 16, 24, 32)

    def __init__(self):
        super().__init__()
        self.stages = nn.ModuleList([conv_bn_relu(3, 16, 2), conv_bn_relu(16, 24, 2), conv_bn_relu(24, 32, 2)])

    def forward(self, x):
        feats = [x]
        for stage in self.stages:
            feats.append(stage(feats[-1]))
        return feats


class UnetDecoder(nn.Module):
    def __init__(self, enc_channels, dec_channels=(24, 16, 16)):
        super().__init__()
        skips = enc_channels[::-1][1:]          # 24, 16, 3
        ins = (enc_channels[-1],) + dec_channels[:-1]
        self.blocks = nn.ModuleList([conv_bn_relu(i + s, o) for i, s, o in zip(ins, skips, dec_channels)])

    def forward(self, *feats):
        feats = feats[::-1]
        x = feats[0]
        for block, skip in zip(self.blocks, feats[1:]):
            x = F.interpolate(x, size=skip.shape[-2:], mode="nearest")
            x = block(torch.cat([x, skip], 1))
        return x


class Unet(nn.Module):
    def __init__(self, encoder_name="tiny_resnet", encoder_weights="imagenet", classes=1, weights_path=None):
        super().__init__()
        self.encoder = TinyResNetEncoder()
        self.decoder = UnetDecoder(TinyResNetEncoder.out_channels)
        self.segmentation_head = nn.Conv2d(16, classes, 3, padding=1)
        if encoder_weights == "imagenet":
            state = torch.load(weights_path, map_location="cpu")
            result = self.encoder.load_state_dict(state, strict=False)
            print(f"loaded {encoder_name} weights ({len(state)} tensors, {len(result.missing_keys)} missing)")

    def forward(self, x):
        return self.segmentation_head(self.decoder(*self.encoder(x)))


def pretrained_checkpoint(path, data_parallel):
    """The "downloaded" ImageNet encoder weights (here: a fixed seeded encoder)."""
    if not os.path.exists(path):
        torch.manual_seed(1234)
        enc = TinyResNetEncoder()
        if data_parallel:  # saved as nn.DataParallel(model).state_dict()
            torch.save(nn.DataParallel(enc).state_dict(), path)
        else:
            torch.save(enc.state_dict(), path)
    return path


class Scenes(Dataset):
    """Street-like scenes: sky/background, a road at the bottom, boxes of the other classes."""

    def __init__(self, n, seed, size=32):
        rng = np.random.RandomState(seed)
        pal = np.random.RandomState(5).randint(20, 235, (len(CLASSES), 3)).astype(np.float32)
        self.items = []
        for _ in range(n):
            mask = np.zeros((size, size), np.int64)
            mask[rng.randint(size // 2, 3 * size // 4):] = 1
            for _ in range(rng.randint(2, 5)):
                c = rng.randint(2, len(CLASSES))
                h, w = rng.randint(4, size // 2, 2)
                y, x = rng.randint(0, size - h), rng.randint(0, size - w)
                mask[y:y + h, x:x + w] = c
            img = (pal[mask] + rng.normal(0, 10, (size, size, 3))) / 255.0
            img = ((img - 0.45) / 0.225).transpose(2, 0, 1).astype(np.float32)
            self.items.append((torch.from_numpy(img), torch.from_numpy(mask)))

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def dice_loss(logits, target, eps=1.0):
    probs = logits.softmax(1)
    onehot = F.one_hot(target, logits.shape[1]).permute(0, 3, 1, 2).float()
    inter = (probs * onehot).sum((0, 2, 3))
    card = probs.sum((0, 2, 3)) + onehot.sum((0, 2, 3))
    return 1 - ((2 * inter + eps) / (card + eps)).mean()


@torch.no_grad()
def validate(model, loader, n):
    model.eval()
    tp, fp, fn = torch.zeros(n), torch.zeros(n), torch.zeros(n)
    for x, y in loader:
        pred = model(x).argmax(1)
        for c in range(n):
            tp[c] += ((pred == c) & (y == c)).sum()
            fp[c] += ((pred == c) & (y != c)).sum()
            fn[c] += ((pred != c) & (y == c)).sum()
    model.train()
    return float((tp / (tp + fp + fn).clamp(min=1)).mean() * 100)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--fault", default="none", choices=["none", "prefix"])
    args = p.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    weights = pretrained_checkpoint(f"tiny_resnet_imagenet{'_dp' if args.fault == 'prefix' else ''}.pth",
                                    data_parallel=args.fault == "prefix")
    model = Unet("tiny_resnet", encoder_weights="imagenet", classes=len(CLASSES), weights_path=weights)
    for param in model.encoder.parameters():  # transfer learning: train the decoder only
        param.requires_grad = False
    train = DataLoader(Scenes(96, 0), batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(0))
    valid = DataLoader(Scenes(16, 1), batch_size=8)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=args.lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.epochs * len(train), eta_min=1e-5)
    ce = nn.CrossEntropyLoss()
    for epoch in range(args.epochs):
        model.train()
        total = 0.0
        for x, y in train:
            logits = model(x)
            loss = dice_loss(logits, y) + ce(logits, y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            total += loss.item()
        print(f"epoch {epoch}: train loss {total / len(train):.4f}  valid mIoU: {validate(model, valid, len(CLASSES)):.2f}",
              flush=True)


if __name__ == "__main__":
    main()
