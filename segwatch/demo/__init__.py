"""The bundled demo: ``train.py`` (a tiny DFormer-style RGB-D training on synthetic
SUNRGBD-like data, with ``--fault collapse|labels|nan|eval-mode|ignore255|none``) and
``demo.yaml`` (its segwatch config).  ``segwatch demo [--fault NAME]`` runs it."""
from pathlib import Path

DEMO_DIR = Path(__file__).resolve().parent
TRAIN_SCRIPT = DEMO_DIR / "train.py"
CONFIG = DEMO_DIR / "demo.yaml"
FAULTS = ("collapse", "labels", "nan", "eval-mode", "ignore255", "none")
