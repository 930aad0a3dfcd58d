"""Helpers in the shape of torchvision's ``references/segmentation/utils.py``: a
``ConfusionMatrix`` that prints global accuracy, per-class IoU and mean IoU, and a small
``MetricLogger`` that prints progress every ``print_freq`` iterations."""
import time
from collections import defaultdict

import torch


class ConfusionMatrix:
    def __init__(self, num_classes):
        self.num_classes = num_classes
        self.mat = None

    def update(self, a, b):
        """a: targets, b: predictions (flattened); targets outside 0..n-1 (255) are skipped."""
        n = self.num_classes
        if self.mat is None:
            self.mat = torch.zeros((n, n), dtype=torch.int64, device=a.device)
        with torch.inference_mode():
            k = (a >= 0) & (a < n)
            inds = n * a[k].to(torch.int64) + b[k]
            self.mat += torch.bincount(inds, minlength=n ** 2).reshape(n, n)

    def reset(self):
        self.mat.zero_()

    def compute(self):
        h = self.mat.float()
        acc_global = torch.diag(h).sum() / h.sum()
        acc = torch.diag(h) / h.sum(1)
        iu = torch.diag(h) / (h.sum(1) + h.sum(0) - torch.diag(h))
        return acc_global, acc, iu

    def reduce_from_all_processes(self):
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(self.mat)

    def __str__(self):
        acc_global, acc, iu = self.compute()
        return ("global correct: {:.1f}\naverage row correct: {}\nIoU: {}\nmean IoU: {:.1f}").format(
            acc_global.item() * 100,
            [f"{i:.1f}" for i in (acc * 100).tolist()],
            [f"{i:.1f}" for i in (iu * 100).tolist()],
            iu.mean().item() * 100)


class MetricLogger:
    def __init__(self, delimiter="  "):
        self.meters = defaultdict(list)
        self.delimiter = delimiter

    def update(self, **kwargs):
        for k, v in kwargs.items():
            self.meters[k].append(float(v))

    def __str__(self):
        return self.delimiter.join(f"{k}: {v[-1]:.4f} ({sum(v) / len(v):.4f})" for k, v in self.meters.items())

    def log_every(self, iterable, print_freq, header=""):
        start = time.time()
        n = len(iterable)
        for i, obj in enumerate(iterable):
            yield obj
            if i % print_freq == 0 or i == n - 1:
                print(f"{header}  [{i:>{len(str(n))}}/{n}]{self.delimiter}{self}{self.delimiter}"
                      f"time: {time.time() - start:.2f}", flush=True)
        print(f"{header} Total time: {time.time() - start:.1f} s", flush=True)
