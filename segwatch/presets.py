"""``segwatch init --preset NAME``: a commented starting config for a common dataset.

Each preset gives the class names, C and the ignore value the usual loaders of that dataset
produce, and ``train.pretrained: none`` (from scratch on purpose) so that the pre-run
checklist has nothing left to guess; the comments say what to change when a loader differs.
"""
from __future__ import annotations

import json

_SUNRGBD = (
    "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf",
    "picture", "counter", "blinds", "desk", "shelves", "curtain", "dresser", "pillow", "mirror",
    "floor_mat", "clothes", "ceiling", "books", "fridge", "tv", "paper", "towel", "shower_curtain",
    "box", "whiteboard", "person", "night_stand", "toilet", "sink", "lamp", "bathtub", "bag"
)
_NYUDV2 = (
    "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf",
    "picture", "counter", "blinds", "desk", "shelves", "curtain", "dresser", "pillow", "mirror",
    "floor_mat", "clothes", "ceiling", "books", "refrigerator", "television", "paper", "towel",
    "shower_curtain", "box", "whiteboard", "person", "night_stand", "toilet", "sink", "lamp",
    "bathtub", "bag", "other_structure", "other_furniture", "other_prop"
)
_CITYSCAPES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic_light", "traffic_sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle"
)
_VOC = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
    "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor"
)
_ADE20K = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass",
    "cabinet", "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain",
    "chair", "car", "water", "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field",
    "armchair", "seat", "fence", "desk", "rock", "wardrobe", "lamp", "bathtub", "railing",
    "cushion", "base", "box", "column", "signboard", "chest of drawers", "counter", "sand", "sink",
    "skyscraper", "fireplace", "refrigerator", "grandstand", "path", "stairs", "runway", "case",
    "pool table", "pillow", "screen door", "stairway", "river", "bridge", "bookcase", "blind",
    "coffee table", "toilet", "flower", "book", "hill", "bench", "countertop", "stove", "palm",
    "kitchen island", "computer", "swivel chair", "boat", "bar", "arcade machine", "hovel", "bus",
    "towel", "light", "truck", "tower", "chandelier", "awning", "streetlight", "booth",
    "television receiver", "airplane", "dirt track", "apparel", "pole", "land", "bannister",
    "escalator", "ottoman", "bottle", "buffet", "poster", "stage", "van", "ship", "fountain",
    "conveyer belt", "canopy", "washer", "plaything", "swimming pool", "stool", "barrel", "basket",
    "waterfall", "tent", "bag", "minibike", "cradle", "oven", "ball", "food", "step", "tank",
    "trade name", "microwave", "pot", "animal", "bicycle", "lake", "dishwasher", "screen",
    "blanket", "sculpture", "hood", "sconce", "vase", "traffic light", "tray", "ashcan", "fan",
    "pier", "crt screen", "plate", "monitor", "bulletin board", "shower", "radiator", "glass",
    "clock", "flag"
)

#: name -> (title, ignore value, reduce_zero_label, class names, comment lines on the ignore value)
PRESETS: dict[str, tuple[str, int, bool, tuple[str, ...], tuple[str, ...]]] = {
    "sunrgbd": ("SUNRGBD", 255, True, _SUNRGBD, (
        "The label PNGs store 0 for \"unlabeled\" and 1..37 for the classes. The guide's codebase",
        "(DFormer-style loaders) reads them as uint8 and shifts with `gt - 1`: unlabeled wraps to",
        "255 and the classes become 0..36. A loader that keeps -1 instead needs ignore_index: -1;",
        "`auto` lets segwatch infer the value from the labels and say which one it found.")),
    "nyudv2": ("NYUDv2", 255, True, _NYUDV2, (
        "The label PNGs store 0 for \"unlabeled\" and 1..40 for the classes; DFormer-style loaders",
        "shift with `gt - 1` as uint8, so unlabeled wraps to 255 and the classes become 0..39.",
        "A loader that keeps 0 as a class makes this a 41-class problem: change num_classes.")),
    "cityscapes": ("Cityscapes", 255, False, _CITYSCAPES, (
        "The *_labelTrainIds.png files map the 19 evaluated classes to 0..18 and everything else",
        "(void, ego vehicle, ...) to 255. The raw *_labelIds.png (ids up to 33) are not train ids:",
        "they show up as label.out_of_range.")),
    "ade20k": ("ADE20K", 255, True, _ADE20K, (
        "The annotation PNGs store 0 for \"other\" and 1..150 for the classes; mmseg loads them with",
        "reduce_zero_label=True: 0 becomes 255 (ignored), the classes shift down to 0..149.")),
    "voc": ("PASCAL VOC 2012", 255, False, _VOC, (
        "The palette PNGs mark object boundaries and \"difficult\" regions with 255, the ignore",
        "value. Background is class 0, a real class (20 object classes + background = 21).")),
}


def _names_yaml(names: tuple[str, ...], indent: str = "    ", width: int = 100) -> list[str]:
    """A YAML flow list of quoted names, wrapped at ``width``."""
    lines, cur = [], indent + "["
    for i, n in enumerate(names):
        item = json.dumps(n) + ("]" if i == len(names) - 1 else ",")
        if len(cur) + 1 + len(item) > width and cur.strip() != "[":
            lines.append(cur)
            cur = indent + " "
        cur += ("" if cur.endswith("[") or cur == indent + " " else " ") + item
    lines.append(cur)
    return lines


def render(name: str, pretrained: str | None = None) -> str:
    """The commented config of preset ``name`` (``pretrained``: a checkpoint path, or None for
    ``none``: from scratch on purpose)."""
    title, ignore, reduce_zero, names, why = PRESETS[name]
    out = [f"# segwatch config for {title} ({len(names)} classes), written by `segwatch init --preset {name}`.",
           "# Check it with `segwatch check --config FILE`; run with",
           "#   segwatch run train.py --config FILE -- <your script's arguments>",
           "dataset:",
           f"  name: {title}",
           f"  num_classes: {len(names)}",
           "  # the label value of unlabelled pixels:"]
    out += [f"  # {line}" for line in why]
    out += [f"  ignore_index: {ignore}",
            f"  reduce_zero_label: {'true' if reduce_zero else 'false'}",
            "  class_names:     # one per class, in class-id order (the ids your labels use)"]
    out += _names_yaml(names)
    out += ["train:",
            "  # expected_lr: 1.0e-4   # your base learning rate: an optimizer lr far from it is flagged"]
    if pretrained:
        out += [f"  pretrained: {json.dumps(pretrained)}   # weights are expected to be loaded "
                "(a load_state_dict call)"]
    else:
        out += ["  # none: training from scratch on purpose (the checklist does not ask for a",
                "  # load_state_dict call). Fine-tuning? Put the checkpoint's path here instead.",
                "  pretrained: none"]
    out += ["policy:",
            "  on_collapse: warn      # warn | pause | kill",
            "  on_nonfinite: warn",
            "  grace_steps: 100       # early steps in which few predicted classes are normal",
            ""]
    return "\n".join(out)
