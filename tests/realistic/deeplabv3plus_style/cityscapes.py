"""A Cityscapes dataset class in the shape of the VainF repo's ``datasets/cityscapes.py``:
``leftImg8bit/<split>/<city>/*_leftImg8bit.png`` with ``gtFine/<split>/<city>/*_gtFine_labelIds.png``
holding the RAW label ids (0..33); ``encode_target`` maps them to the 19 train ids through a
lookup table, every non-evaluated id (void, parking, guard rail...) to 255.  The mapping is
applied after the paired transforms, on the uint8 label tensor.

``write_fake_cityscapes(root)`` draws a small street-scene dataset in that layout (sky,
building, vegetation, road, sidewalk, cars, a pedestrian, a 'static' object and a
rectification border of id 0), so that the labels follow a rule a network can learn."""
import os

import numpy as np
from PIL import Image
from torch.utils import data

# raw id -> train id for the 19 evaluated classes; every other raw id is ignored (255)
EVAL_IDS = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10,
            24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
CLASS_NAMES = ["road", "sidewalk", "building", "wall", "fence", "pole", "traffic light",
               "traffic sign", "vegetation", "terrain", "sky", "person", "rider", "car",
               "truck", "bus", "train", "motorcycle", "bicycle"]


class Cityscapes(data.Dataset):
    id_to_train_id = np.array([EVAL_IDS.get(i, 255) for i in range(34)] + [255])  # [-1]: license plate
    FAULT = "none"   # "no_train_id": the raw ids reach the loss

    def __init__(self, root, split="train", transform=None):
        self.images_dir = os.path.join(root, "leftImg8bit", split)
        self.targets_dir = os.path.join(root, "gtFine", split)
        self.transform = transform
        if not os.path.isdir(self.images_dir) or not os.path.isdir(self.targets_dir):
            raise RuntimeError("Dataset not found or incomplete.")
        self.images, self.targets = [], []
        for city in sorted(os.listdir(self.images_dir)):
            for name in sorted(os.listdir(os.path.join(self.images_dir, city))):
                self.images.append(os.path.join(self.images_dir, city, name))
                stem = name.split("_leftImg8bit")[0]
                self.targets.append(os.path.join(self.targets_dir, city, stem + "_gtFine_labelIds.png"))

    @classmethod
    def encode_target(cls, target):
        return cls.id_to_train_id[np.array(target)]

    def __getitem__(self, index):
        image = Image.open(self.images[index]).convert("RGB")
        target = Image.open(self.targets[index])
        if self.transform:
            image, target = self.transform(image, target)
        if self.FAULT == "no_train_id":
            return image, np.array(target, dtype=np.int64)
        return image, self.encode_target(target)

    def __len__(self):
        return len(self.images)


_COLOURS = {7: (128, 64, 128), 8: (244, 35, 232), 11: (70, 70, 70), 21: (107, 142, 35),
            23: (70, 130, 180), 24: (220, 20, 60), 26: (0, 0, 142), 4: (20, 20, 20), 0: (0, 0, 0)}


def _scene(rng, h, w):
    lab = np.zeros((h, w), np.uint8)
    sky, horizon = rng.randint(h // 6, h // 3), rng.randint(5 * h // 8, 3 * h // 4)
    lab[:sky] = 23                                       # sky
    lab[sky:horizon] = 11                                # building
    x = rng.randint(0, w - w // 4)
    lab[sky:horizon, x:x + rng.randint(w // 12, w // 4)] = 21   # vegetation
    lab[horizon:] = 7                                    # road
    lab[horizon:horizon + 4] = 8                         # sidewalk
    for _ in range(rng.randint(1, 3)):                   # cars
        x = rng.randint(4, w - w // 5)
        lab[horizon - 6:horizon + 6, x:x + rng.randint(w // 10, w // 6)] = 26
    x = rng.randint(2, w - 8)
    lab[horizon - 14:horizon + 2, x:x + 5] = 24          # person
    x = rng.randint(0, w - 6)
    lab[sky:sky + 5, x:x + 6] = 4                        # 'static': not evaluated -> 255
    lab[:, :2] = 0; lab[:, -2:] = 0; lab[-2:] = 0        # rectification border: unlabeled
    img = np.zeros((h, w, 3), np.float32)
    for k, c in _COLOURS.items():
        img[lab == k] = c
    img += rng.normal(0, 12, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), lab


def write_fake_cityscapes(root, n_train=32, n_val=8, h=64, w=128, seed=0):
    rng = np.random.RandomState(seed)
    for split, n in (("train", n_train), ("val", n_val)):
        for i in range(n):
            city = ("aachen", "bremen")[i % 2]
            for top in ("leftImg8bit", "gtFine"):
                os.makedirs(os.path.join(root, top, split, city), exist_ok=True)
            img, lab = _scene(rng, h, w)
            stem = os.path.join("%s", split, city, "%s_%06d_000019" % (city, i))
            Image.fromarray(img).save(os.path.join(root, stem % "leftImg8bit" + "_leftImg8bit.png"))
            Image.fromarray(lab).save(os.path.join(root, stem % "gtFine" + "_gtFine_labelIds.png"))
