"""A SegFormer fine-tuning script in the shape of transformers' own example
(``examples/pytorch/semantic-segmentation/run_semantic_segmentation.py``), reduced to what a
CPU test can run without downloads: it knows nothing about segwatch.

* ``HfArgumentParser`` over ``ModelArguments``, ``DataTrainingArguments`` and
  ``TrainingArguments``: everything is set on the command line (``--learning_rate``,
  ``--num_train_epochs``, ``--eval_strategy``, ``--use_cpu``, ``--report_to none``...);
* ``id2label`` / ``label2id`` from the dataset's class list, given to the model config;
* the model built from a config (``SegformerConfig``, tiny, random init: no hub access);
* annotations stored ADE20K-style (0 = "other", 1..N = the classes) and turned into
  0..N-1 with 255 = ignore by ``--do_reduce_labels`` (the example's image processor flag);
* ``compute_metrics`` upsamples the 1/4-size logits and computes ``mean_iou`` itself (the
  example loads ``evaluate``'s ``mean_iou``; that needs a download);
* ``Trainer(...).train()``, then ``trainer.evaluate()``.

    python run_semantic_segmentation.py --output_dir out --use_cpu --report_to none ...
"""
import logging
import os
import sys
from dataclasses import dataclass, field

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.utils.data import Dataset  # noqa: E402
from transformers import (HfArgumentParser, SegformerConfig, SegformerForSemanticSegmentation,  # noqa: E402
                          Trainer, TrainingArguments, set_seed)

logger = logging.getLogger(__name__)

# the dataset's classes (its id2label.json), index 0 of the annotations being "other"
CLASSES = ["wall", "floor", "ceiling", "window", "door", "table", "chair", "plant"]
IGNORE = 255
SIZE = 64


@dataclass
class ModelArguments:
    hidden_sizes: str = field(default="16,32,64", metadata={"help": "encoder widths, comma separated"})
    decoder_hidden_size: int = field(default=64)


@dataclass
class DataTrainingArguments:
    train_samples: int = field(default=96)
    eval_samples: int = field(default=16)
    do_reduce_labels: bool = field(default=True, metadata={
        "help": "annotations use 0 for 'other': map it to 255 (ignored) and shift the classes down by one"})


class SceneParsing(Dataset):
    """Synthetic indoor scenes: a block layout per image, a colour per class plus noise.
    Items are {"pixel_values": float [3,H,W] normalised, "labels": int64 [H,W]}."""

    def __init__(self, n, seed, reduce_labels):
        C = len(CLASSES)
        colours = np.random.default_rng(1234).uniform(0, 255, (C + 1, 3))   # one look per class
        rng = np.random.default_rng(seed)
        self.items = []
        for _ in range(n):
            ann = np.zeros((SIZE, SIZE), np.int64)
            ann[:SIZE // 4] = 3                       # ceiling
            ann[SIZE // 4:3 * SIZE // 4] = 1          # wall
            ann[3 * SIZE // 4:] = 2                   # floor
            for _ in range(int(rng.integers(2, 5))):  # objects
                c = int(rng.integers(4, C + 1))
                h, w = (int(v) for v in rng.integers(8, 28, 2))
                y, x = int(rng.integers(0, SIZE - h)), int(rng.integers(0, SIZE - w))
                ann[y:y + h, x:x + w] = c
            img = colours[ann] + rng.normal(0, 12, (SIZE, SIZE, 3))
            other = np.kron(rng.random((SIZE // 8, SIZE // 8)) < 0.08, np.ones((8, 8), bool))
            ann[other] = 0                            # "other": unlabeled in the annotations
            img = (np.clip(img, 0, 255) / 255.0 - 0.5) / 0.25
            if reduce_labels:
                ann = np.where(ann == 0, IGNORE, ann - 1)
            self.items.append((torch.from_numpy(img.transpose(2, 0, 1)).float(), torch.from_numpy(ann)))

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        pixel_values, labels = self.items[i]
        return {"pixel_values": pixel_values, "labels": labels}


def collate_fn(examples):
    return {"pixel_values": torch.stack([e["pixel_values"] for e in examples]),
            "labels": torch.stack([e["labels"] for e in examples])}


def compute_metrics(eval_pred):
    logits, labels = eval_pred
    num_labels = len(CLASSES)
    with torch.no_grad():
        logits = torch.from_numpy(np.asarray(logits))
        labels = torch.from_numpy(np.asarray(labels)).long()
        pred = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=False).argmax(1)
        valid = (labels >= 0) & (labels < num_labels)
        hist = torch.bincount(num_labels * labels[valid] + pred[valid], minlength=num_labels ** 2)
        hist = hist.view(num_labels, num_labels).double()
        iou = hist.diag() / (hist.sum(0) + hist.sum(1) - hist.diag())
        acc = hist.diag().sum() / hist.sum()
    per_class = {f"iou_{CLASSES[i]}": float(v) for i, v in enumerate(iou) if not torch.isnan(v)}
    return {"mean_iou": float(torch.nanmean(iou)), "overall_accuracy": float(acc), **per_class}


def main():
    parser = HfArgumentParser((ModelArguments, DataTrainingArguments, TrainingArguments))
    model_args, data_args, training_args = parser.parse_args_into_dataclasses()
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s",
                        handlers=[logging.StreamHandler(sys.stdout)], level=logging.INFO)
    set_seed(training_args.seed)

    id2label = {i: name for i, name in enumerate(CLASSES)}
    label2id = {name: i for i, name in id2label.items()}
    widths = [int(w) for w in model_args.hidden_sizes.split(",")]
    config = SegformerConfig(
        num_channels=3, num_encoder_blocks=len(widths), depths=[1] * len(widths),
        sr_ratios=[4, 2, 1][:len(widths)], hidden_sizes=widths, patch_sizes=[7, 3, 3][:len(widths)],
        strides=[4, 2, 2][:len(widths)], num_attention_heads=[1, 2, 4][:len(widths)], mlp_ratios=[2] * len(widths),
        decoder_hidden_size=model_args.decoder_hidden_size, id2label=id2label, label2id=label2id,
        semantic_loss_ignore_index=IGNORE)
    model = SegformerForSemanticSegmentation(config)
    logger.info("model: %d parameters, %d labels", sum(p.numel() for p in model.parameters()), config.num_labels)

    train_ds = SceneParsing(data_args.train_samples, training_args.seed, data_args.do_reduce_labels)
    eval_ds = SceneParsing(data_args.eval_samples, training_args.seed + 1000, data_args.do_reduce_labels)
    trainer = Trainer(model=model, args=training_args, train_dataset=train_ds, eval_dataset=eval_ds,
                      compute_metrics=compute_metrics, data_collator=collate_fn)
    if training_args.do_train:
        train_result = trainer.train()
        trainer.log_metrics("train", train_result.metrics)
    if training_args.do_eval:
        metrics = trainer.evaluate()
        trainer.log_metrics("eval", metrics)


if __name__ == "__main__":
    main()
