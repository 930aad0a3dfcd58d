"""A ``Metrics`` class with its own confusion matrix, in the shape of DFormer's
``utils/metrics_new.py``: ``update(logits, target)`` then ``compute_iou()`` in percent."""
import torch


class Metrics:
    def __init__(self, num_classes, ignore_label, device):
        self.ignore_label = ignore_label
        self.num_classes = num_classes
        self.hist = torch.zeros(num_classes, num_classes).to(device)

    def update(self, pred, target):
        pred = pred.argmax(dim=1)
        keep = target != self.ignore_label
        self.hist += torch.bincount(target[keep] * self.num_classes + pred[keep],
                                    minlength=self.num_classes ** 2).view(self.num_classes, self.num_classes)

    def compute_iou(self):
        ious = self.hist.diag() / (self.hist.sum(0) + self.hist.sum(1) - self.hist.diag())
        ious[ious.isnan()] = 0.0
        miou = ious.mean().item()
        ious *= 100
        miou *= 100
        return ious.cpu().numpy().round(2).tolist(), round(miou, 2)

    def compute_pixel_acc(self):
        acc = self.hist.diag() / self.hist.sum(1)
        acc[acc.isnan()] = 0.0
        return round(acc.mean().item() * 100, 2)
