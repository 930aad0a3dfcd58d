"""Tiny synthetic RGB-D segmentation task shared by the fault-zoo trainings.

Plain PyTorch + numpy; knows nothing about segwatch.  Every class has its own colour,
its own texture (a stripe pattern) in RGB and its own depth level, so a few 3x3 conv
layers can learn it in a hundred steps.  Layouts look like indoor scenes: a wall
(class 0) everywhere, a floor (class 1) at the bottom, and a handful of rectangles and
blobs of the other classes drawn with SUNRGBD-like frequencies, plus unlabeled pixels.

The scripts import this module through ``sys.path[0]`` (their own directory).
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

SUNRGBD_CLASSES = [
    "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window",
    "bookshelf", "picture", "counter", "blinds", "desk", "shelves", "curtain", "dresser",
    "pillow", "mirror", "floor_mat", "clothes", "ceiling", "books", "fridge", "tv",
    "paper", "towel", "shower_curtain", "box", "whiteboard", "person", "night_stand",
    "toilet", "sink", "lamp", "bathtub", "bag",
]

# relative object frequencies for classes 2.. (wall and floor are drawn as the layout)
_OBJ_WEIGHTS = np.array([1.0 / (1.0 + 0.35 * i) for i in range(64)])

MEAN = 0.5
STD = 0.25


def palette(num_classes: int, seed: int = 1234):
    """Per-class colour (3), depth level (1) and stripe frequency (1)."""
    rng = np.random.RandomState(seed)
    colors = rng.uniform(0.05, 0.95, size=(num_classes, 3)).astype(np.float32)
    depth = np.linspace(0.1, 0.95, num_classes).astype(np.float32)
    rng.shuffle(depth)
    stripes = rng.randint(0, 4, size=num_classes)
    return colors, depth, stripes


def make_layout(rng, size: int, num_classes: int, n_objects: int = 4, imbalance: float | None = None):
    """Integer label map in 0..C-1 (no ignore yet)."""
    lab = np.zeros((size, size), dtype=np.int64)
    if imbalance is None:
        floor_top = rng.randint(int(size * 0.55), int(size * 0.8))
        lab[floor_top:, :] = 1 if num_classes > 1 else 0
        w = _OBJ_WEIGHTS[: max(num_classes - 2, 1)]
        probs = w / w.sum()
        for _ in range(rng.randint(n_objects - 1, n_objects + 3)):
            c = 2 + rng.choice(len(probs), p=probs) if num_classes > 2 else rng.randint(num_classes)
            h = rng.randint(size // 8, size // 2)
            wd = rng.randint(size // 8, size // 2)
            y = rng.randint(0, size - h)
            x = rng.randint(0, size - wd)
            if rng.rand() < 0.5:
                lab[y:y + h, x:x + wd] = c
            else:  # ellipse blob
                yy, xx = np.ogrid[:size, :size]
                m = ((yy - (y + h / 2)) / (h / 2)) ** 2 + ((xx - (x + wd / 2)) / (wd / 2)) ** 2 <= 1
                lab[m] = c
    else:  # one class covers about `imbalance` of the pixels: a few tiny objects on a wall
        n_small = rng.randint(1, 3)
        for _ in range(n_small):
            c = rng.randint(1, num_classes)
            s = max(2, int(round(size * math.sqrt((1 - imbalance) / n_small))))
            y = rng.randint(0, size - s)
            x = rng.randint(0, size - s)
            lab[y:y + s, x:x + s] = c
    return lab


def render(lab, rng, num_classes: int):
    """RGB in [0,1] (3,H,W) float32 and depth in [0,1] (1,H,W) float32 for a label map."""
    colors, depth_lv, stripes = palette(num_classes)
    size = lab.shape[0]
    rgb = colors[lab].transpose(2, 0, 1).copy()  # 3,H,W
    xx = np.arange(size)[None, :].repeat(size, 0)
    yy = np.arange(size)[:, None].repeat(size, 1)
    s = stripes[lab]
    tex = np.where(s == 1, (xx % 4 < 2), np.where(s == 2, (yy % 4 < 2), np.where(s == 3, ((xx + yy) % 4 < 2), 0.5)))
    rgb += 0.12 * (tex.astype(np.float32) - 0.5)[None]
    rgb += rng.normal(0, 0.06, size=rgb.shape).astype(np.float32)
    dep = depth_lv[lab][None] + rng.normal(0, 0.03, size=(1, size, size)).astype(np.float32)
    return np.clip(rgb, 0, 1).astype(np.float32), np.clip(dep, 0, 1).astype(np.float32)


def add_unlabeled(lab, rng, ignore_value: int, share: float = 0.08):
    """Mark a few regions unlabeled (like SUNRGBD's unannotated pixels)."""
    size = lab.shape[0]
    out = lab.copy()
    n = rng.randint(1, 3)
    for _ in range(n):
        h = max(1, int(size * rng.uniform(0.05, math.sqrt(share))))
        w = max(1, int(size * rng.uniform(0.1, 0.5)))
        y = rng.randint(0, size - h + 1)
        x = rng.randint(0, size - w + 1)
        out[y:y + h, x:x + w] = ignore_value
    return out


class SynthRGBD(Dataset):
    """N samples generated up front.

    style: "tuple"   -> (rgb, depth, label)            rgb normalized, label int64, ignore=-1
           "dict"    -> {"data", "modal_x", "label"}   same values
           "raw"     -> (rgb, depth, label_u8)         rgb in [0,1], label uint8 with 0=unlabeled
                                                        and classes 1..C (the on-disk PNG form)
    """

    def __init__(self, n: int, size: int = 32, num_classes: int = 13, seed: int = 0,
                 ignore_value: int = -1, style: str = "tuple", unlabeled: float = 0.08,
                 imbalance: float | None = None, normalize: bool = True):
        rng = np.random.RandomState(seed)
        self.style = style
        self.num_classes = num_classes
        self.rgb, self.depth, self.label = [], [], []
        for _ in range(n):
            lab = make_layout(rng, size, num_classes, imbalance=imbalance)
            rgb, dep = render(lab, rng, num_classes)
            if unlabeled > 0:
                lab = add_unlabeled(lab, rng, -1, unlabeled)
            if style == "raw":
                lab = (lab + 1).astype(np.uint8)  # 0 = unlabeled, 1..C
            else:
                lab = np.where(lab < 0, ignore_value, lab).astype(np.int64)
                if normalize:
                    rgb = (rgb - MEAN) / STD
                    dep = (dep - MEAN) / STD
            self.rgb.append(torch.from_numpy(rgb))
            self.depth.append(torch.from_numpy(dep))
            self.label.append(torch.from_numpy(lab))

    def __len__(self):
        return len(self.rgb)

    def __getitem__(self, i):
        if self.style == "dict":
            return {"data": self.rgb[i], "modal_x": self.depth[i], "label": self.label[i]}
        return self.rgb[i], self.depth[i], self.label[i]


def loaders(num_classes=13, n_train=160, n_val=32, size=32, batch_size=8, style="tuple",
            ignore_value=-1, num_workers=0, seed=0, **kw):
    train_ds = SynthRGBD(n_train, size, num_classes, seed=seed, ignore_value=ignore_value, style=style, **kw)
    val_ds = SynthRGBD(n_val, size, num_classes, seed=seed + 1000, ignore_value=ignore_value, style=style, **kw)
    g = torch.Generator().manual_seed(seed)
    train = DataLoader(train_ds, batch_size=batch_size, shuffle=True, drop_last=True,
                       num_workers=num_workers, generator=g)
    val = DataLoader(val_ds, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    return train, val


class TinySegNet(nn.Module):
    """A few 3x3 conv + BN + ReLU layers at full resolution, then a 1x1 classifier."""

    def __init__(self, in_ch: int = 4, num_classes: int = 13, width: int = 24):
        super().__init__()
        self.backbone = nn.Sequential(
            nn.Conv2d(in_ch, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, padding=2, dilation=2, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
        )
        self.classifier = nn.Conv2d(width, num_classes, 1)

    def forward(self, x):
        return self.classifier(self.backbone(x))


def fast_hist(pred, label, num_classes, ignore_index=-1):
    """Confusion matrix (rows = ground truth) as a torch int64 tensor."""
    k = (label != ignore_index) & (label >= 0) & (label < num_classes)
    return torch.bincount(num_classes * label[k] + pred[k], minlength=num_classes ** 2).view(num_classes, num_classes)


def miou_from_hist(hist):
    """The guide's convention: IoU NaN -> 0, mean over all classes, percent."""
    hist = hist.double()
    iou = hist.diag() / (hist.sum(0) + hist.sum(1) - hist.diag())
    iou[iou.isnan()] = 0.0
    return float(iou.mean()) * 100


@torch.no_grad()
def evaluate(model, loader, num_classes, ignore_index=-1, forward=None):
    """Whole-loader evaluation; returns the mIoU in percent."""
    was_training = model.training
    model.eval()
    hist = torch.zeros(num_classes, num_classes, dtype=torch.int64)
    for rgb, depth, label in loader:
        x = torch.cat([rgb, depth], 1)
        logits = model(x) if forward is None else forward(rgb, depth)
        hist += fast_hist(logits.argmax(1), label, num_classes, ignore_index)
    model.train(was_training)
    return miou_from_hist(hist)


def seed_all(seed: int = 0):
    torch.manual_seed(seed)
    np.random.seed(seed)
    torch.set_num_threads(1)
