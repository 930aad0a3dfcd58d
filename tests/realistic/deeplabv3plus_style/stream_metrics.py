"""``StreamSegMetrics`` as the VainF repo has it: a numpy confusion matrix fed with
``update(targets, preds)`` (numpy arrays, label values outside 0..C-1 -- the 255s -- are
dropped), and ``get_results()`` with an mIoU that is the nanmean over the classes present
(absent classes give NaN, not 0)."""
import numpy as np


class StreamSegMetrics:
    def __init__(self, n_classes):
        self.n_classes = n_classes
        self.confusion_matrix = np.zeros((n_classes, n_classes))

    def update(self, label_trues, label_preds):
        for lt, lp in zip(label_trues, label_preds):
            self.confusion_matrix += self._fast_hist(lt.flatten(), lp.flatten())

    def _fast_hist(self, label_true, label_pred):
        mask = (label_true >= 0) & (label_true < self.n_classes)
        return np.bincount(self.n_classes * label_true[mask].astype(int) + label_pred[mask],
                           minlength=self.n_classes ** 2).reshape(self.n_classes, self.n_classes)

    def get_results(self):
        hist = self.confusion_matrix
        with np.errstate(divide="ignore", invalid="ignore"):
            acc = np.diag(hist).sum() / hist.sum()
            acc_cls = np.nanmean(np.diag(hist) / hist.sum(axis=1))
            iu = np.diag(hist) / (hist.sum(axis=1) + hist.sum(axis=0) - np.diag(hist))
        freq = hist.sum(axis=1) / hist.sum()
        return {"Overall Acc": acc, "Mean Acc": acc_cls,
                "FreqW Acc": (freq[freq > 0] * iu[freq > 0]).sum(),
                "Mean IoU": np.nanmean(iu), "Class IoU": dict(zip(range(self.n_classes), iu))}

    @staticmethod
    def to_str(results):
        return "\n" + "".join("%s: %f\n" % (k, v) for k, v in results.items() if k != "Class IoU")

    def reset(self):
        self.confusion_matrix = np.zeros((self.n_classes, self.n_classes))
