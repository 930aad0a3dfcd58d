"""A tiny Hugging Face Trainer segmentation training: a randomly initialised SegFormer
(``SegformerForSemanticSegmentation(SegformerConfig(...tiny...))``, no weight download) on
synthetic RGB images, 13 classes, unlabeled = 255 (SegFormer's ``semantic_loss_ignore_index``).
The model returns logits at 1/4 of the label size; ``compute_metrics`` upsamples them and
returns the guide's ``mean_iou`` (a fraction), which the Trainer logs as ``eval_mean_iou``.

    python hf_train.py [--callback] [--epochs N]

``--callback`` adds ``segwatch.adapters.hf.SegwatchTrainerCallback`` by hand; without it the
script is unmodified and relies on ``adapter: auto``.
"""
import argparse
import os
import sys
import tempfile
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.utils.data import Dataset  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "faults"))
from _synth import SynthRGBD, seed_all  # noqa: E402

from transformers import SegformerConfig, SegformerForSemanticSegmentation, Trainer, TrainingArguments  # noqa: E402

p = argparse.ArgumentParser()
p.add_argument("--callback", action="store_true")
p.add_argument("--epochs", type=int, default=5)
args = p.parse_args()
warnings.filterwarnings("ignore")

C = 13
IGNORE = 255


class HFSeg(Dataset):
    """{"pixel_values": [3, H, W] float, "labels": [H, W] int64 with 255 = unlabeled}."""

    def __init__(self, n, seed):
        self.ds = SynthRGBD(n, 32, C, seed=seed, ignore_value=IGNORE, style="tuple")

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, i):
        rgb, depth, label = self.ds[i]
        return {"pixel_values": rgb, "labels": label}


def compute_metrics(eval_pred):
    logits, labels = eval_pred
    logits = torch.from_numpy(np.asarray(logits))
    labels = torch.from_numpy(np.asarray(labels)).long()
    pred = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=False).argmax(1)
    k = (labels >= 0) & (labels < C)
    hist = torch.bincount(C * labels[k] + pred[k], minlength=C * C).view(C, C).double()
    iou = hist.diag() / (hist.sum(0) + hist.sum(1) - hist.diag())
    iou[iou.isnan()] = 0.0
    miou = float(iou.mean())
    return {"mean_iou": miou}


def main():
    seed_all(0)
    cfg = SegformerConfig(num_channels=3, num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1],
                          hidden_sizes=[16, 32], patch_sizes=[3, 3], strides=[2, 2], num_attention_heads=[1, 2],
                          mlp_ratios=[2, 2], decoder_hidden_size=32, num_labels=C,
                          semantic_loss_ignore_index=IGNORE)
    model = SegformerForSemanticSegmentation(cfg)
    out = tempfile.mkdtemp(prefix="hf_train_")
    targs = TrainingArguments(output_dir=out, num_train_epochs=args.epochs, per_device_train_batch_size=8,
                              per_device_eval_batch_size=8, learning_rate=2e-2, eval_strategy="epoch",
                              save_strategy="no", logging_steps=8, report_to=[], use_cpu=True,
                              dataloader_num_workers=0, disable_tqdm=True, seed=0, remove_unused_columns=False)
    callbacks = []
    if args.callback:
        from segwatch.adapters.hf import SegwatchTrainerCallback
        callbacks.append(SegwatchTrainerCallback())
    trainer = Trainer(model=model, args=targs, train_dataset=HFSeg(128, 0), eval_dataset=HFSeg(16, 1000),
                      compute_metrics=compute_metrics, callbacks=callbacks)
    trainer.train()
    names = [type(c).__name__ for c in trainer.callback_handler.callbacks]
    print("callbacks:", ",".join(names), flush=True)


if __name__ == "__main__":
    main()
