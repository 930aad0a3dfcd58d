"""Paired (image, label) transforms in the shape of the VainF repo's ``utils/ext_transforms``,
on PIL images, without torchvision (kept out of this environment)."""
import random

import numpy as np
import torch
from PIL import Image


class ExtCompose:
    def __init__(self, transforms):
        self.transforms = transforms

    def __call__(self, img, lbl):
        for t in self.transforms:
            img, lbl = t(img, lbl)
        return img, lbl


class ExtRandomCrop:
    def __init__(self, size):
        self.size = (size, size) if isinstance(size, int) else size

    def __call__(self, img, lbl):
        assert img.size == lbl.size, "size of img and lbl should be the same. %s, %s" % (img.size, lbl.size)
        w, h = img.size
        th, tw = self.size
        i, j = random.randint(0, h - th), random.randint(0, w - tw)
        box = (j, i, j + tw, i + th)
        return img.crop(box), lbl.crop(box)


class ExtRandomHorizontalFlip:
    def __init__(self, p=0.5):
        self.p = p

    def __call__(self, img, lbl):
        if random.random() < self.p:
            return img.transpose(Image.FLIP_LEFT_RIGHT), lbl.transpose(Image.FLIP_LEFT_RIGHT)
        return img, lbl


class ExtToTensor:
    """Image to float CHW in [0, 1]; the label to a tensor of ``target_type`` (not scaled)."""

    def __init__(self, target_type="uint8"):
        self.target_type = target_type

    def __call__(self, pic, lbl):
        img = torch.from_numpy(np.asarray(pic, dtype=np.float32).transpose(2, 0, 1) / 255.0)
        return img, torch.from_numpy(np.array(lbl, dtype=self.target_type))


class ExtNormalize:
    def __init__(self, mean, std):
        self.mean = torch.tensor(mean).view(-1, 1, 1)
        self.std = torch.tensor(std).view(-1, 1, 1)

    def __call__(self, tensor, lbl):
        return (tensor - self.mean) / self.std, lbl
