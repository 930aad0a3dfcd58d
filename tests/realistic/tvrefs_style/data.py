"""VOC-like data drawn in memory: background (class 0) and a few objects of classes
1..C-1, each with its own colour and texture, and -- as in Pascal VOC's label PNGs -- a
one-pixel border of 255 (ignore) around every object.  Training transforms: random
horizontal flip and random crop (image and target together), then normalisation."""
import numpy as np
import torch
from torch.utils.data import Dataset

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def draw(rng, size, num_classes):
    target = np.zeros((size, size), np.uint8)
    yy, xx = np.mgrid[:size, :size]
    for _ in range(rng.randint(2, 5)):
        c = rng.randint(1, num_classes)
        cy, cx = rng.randint(4, size - 4, 2)
        ry, rx = rng.randint(3, size // 3, 2)
        if rng.rand() < 0.5:
            m = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        else:
            m = (abs(yy - cy) <= ry) & (abs(xx - cx) <= rx)
        inner = np.zeros_like(m)
        inner[1:-1, 1:-1] = m[1:-1, 1:-1] & m[:-2, 1:-1] & m[2:, 1:-1] & m[1:-1, :-2] & m[1:-1, 2:]
        target[m] = 255           # the border stays 255
        target[inner] = c
    pal = np.random.RandomState(3).randint(15, 240, (256, 3)).astype(np.float32)
    img = pal[target] + rng.normal(0, 10, (size, size, 3))
    img[(xx + yy) % 3 == 0] += 8.0 * (target[(xx + yy) % 3 == 0, None] % 3)
    return np.clip(img, 0, 255).astype(np.uint8), target


class VOCLike(Dataset):
    def __init__(self, n, size, num_classes, seed, crop=None):
        rng = np.random.RandomState(seed)
        self.items = [draw(rng, size, num_classes) for _ in range(n)]
        self.crop = crop
        self.rng = np.random.RandomState(seed + 1)

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        img, target = self.items[i]
        if self.crop is not None:  # SegmentationPresetTrain: flip + crop
            if self.rng.rand() < 0.5:
                img, target = img[:, ::-1], target[:, ::-1]
            h, w = target.shape
            y, x = self.rng.randint(0, h - self.crop + 1), self.rng.randint(0, w - self.crop + 1)
            img, target = img[y:y + self.crop, x:x + self.crop], target[y:y + self.crop, x:x + self.crop]
        img = ((img.astype(np.float32) / 255.0 - MEAN) / STD).transpose(2, 0, 1)
        return torch.from_numpy(np.ascontiguousarray(img)), torch.from_numpy(np.ascontiguousarray(target)).long()
