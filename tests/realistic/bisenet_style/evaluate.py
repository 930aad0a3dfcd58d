"""``tools/evaluate.py`` of CoinCheung/BiSeNet, scaled down: ``eval_model`` switches the net
to ``aux_mode='eval'`` and runs three passes over the same val loader --
single scale (``ss``), single-scale sliding window (``ssc``: the model sees crops and the
probabilities are stitched), multi-scale + flip (``msf``: the model sees rescaled images) --
each with its own ``Metrics`` (a torch confusion matrix; IoU = tp / (tp + fp + fn + 1), so an
absent class scores 0 and the mIoU is the mean over all classes), then prints the per-class
table with a ``mious`` row."""
import logging
import math

import torch
import torch.nn.functional as F

from cityscapes_data import get_data_loader


def get_round_size(size, divisor=32):
    return [math.ceil(el / divisor) * divisor for el in size]


class Metrics:
    def __init__(self, n_classes, lb_ignore=255):
        self.n_classes, self.lb_ignore = n_classes, lb_ignore
        self.confusion = torch.zeros((n_classes, n_classes))

    @torch.no_grad()
    def update(self, preds, label):
        keep = label != self.lb_ignore
        preds, label = preds[keep], label[keep]
        self.confusion += torch.bincount(label * self.n_classes + preds,
                                         minlength=self.n_classes ** 2).view(self.n_classes, self.n_classes)

    @torch.no_grad()
    def compute_metrics(self):
        tps = self.confusion.diag()
        fps = self.confusion.sum(dim=0) - tps
        fns = self.confusion.sum(dim=1) - tps
        ious = tps / (tps + fps + fns + 1)
        return dict(weights=(self.confusion.sum(dim=1) / self.confusion.sum()).tolist(),
                    ious=ious.tolist(), miou=ious.nanmean().item())


class MscEvalV0:
    def __init__(self, n_classes, scales=(0.5,), flip=False, lb_ignore=255):
        self.n_classes, self.scales, self.flip = n_classes, scales, flip
        self.metric_observer = Metrics(n_classes, lb_ignore)

    @torch.no_grad()
    def __call__(self, net, dl):
        for imgs, label in dl:
            N, _, H, W = imgs.shape
            label = label.squeeze(1)
            size = label.size()[-2:]
            probs = torch.zeros((N, self.n_classes, *size))
            for scale in self.scales:
                sH, sW = get_round_size((int(scale * H), int(scale * W)))
                im_sc = F.interpolate(imgs, size=(sH, sW), mode="bilinear", align_corners=True)
                logits = F.interpolate(net(im_sc)[0], size=size, mode="bilinear", align_corners=True)
                probs += torch.softmax(logits, dim=1)
                if self.flip:
                    logits = torch.flip(net(torch.flip(im_sc, dims=(3,)))[0], dims=(3,))
                    logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=True)
                    probs += torch.softmax(logits, dim=1)
            self.metric_observer.update(torch.argmax(probs, dim=1), label)
        return self.metric_observer.compute_metrics()


class MscEvalCrop:
    """Sliding window of ``cropsize`` with stride ``cropstride`` x the crop."""

    def __init__(self, n_classes, cropsize=64, cropstride=2. / 3, lb_ignore=255):
        self.n_classes = n_classes
        self.cropsize = cropsize if isinstance(cropsize, (list, tuple)) else (cropsize, cropsize)
        self.cropstride = cropstride
        self.metric_observer = Metrics(n_classes, lb_ignore)

    @torch.no_grad()
    def __call__(self, net, dl):
        cropH, cropW = self.cropsize
        for imgs, label in dl:
            label = label.squeeze(1)
            N, _, H, W = imgs.shape
            strdH, strdW = math.ceil(cropH * self.cropstride), math.ceil(cropW * self.cropstride)
            n_h, n_w = math.ceil((H - cropH) / strdH) + 1, math.ceil((W - cropW) / strdW) + 1
            prob = torch.zeros(N, self.n_classes, H, W)
            for i in range(n_h):
                for j in range(n_w):
                    endH, endW = min(H, strdH * i + cropH), min(W, strdW * j + cropW)
                    stH, stW = endH - cropH, endW - cropW
                    chip = imgs[:, :, stH:endH, stW:endW]
                    prob[:, :, stH:endH, stW:endW] += net(chip)[0].softmax(dim=1)
            self.metric_observer.update(torch.argmax(prob, dim=1), label)
        return self.metric_observer.compute_metrics()


def _table(heads, rows):
    rows = [[str(x) for x in r] for r in rows]
    w = [max(len(x) for x in col) for col in zip(heads, *rows)]
    line = lambda r: "| " + " | ".join(x.ljust(n) for x, n in zip(r, w)) + " |"
    return "\n".join([line(heads), "|-" + "-+-".join("-" * n for n in w) + "-|"] + [line(r) for r in rows])


@torch.no_grad()
def eval_model(cfg, net):
    org_aux = net.aux_mode
    net.aux_mode = "eval"
    net.eval()
    dl = get_data_loader(cfg, mode="val")
    lb_ignore = dl.dataset.lb_ignore
    logger = logging.getLogger()
    heads, mious, cat_ious = [], [], []
    passes = [("ss", MscEvalV0(cfg.n_cats, (1.,), False, lb_ignore)),
              ("ssc", MscEvalCrop(cfg.n_cats, cfg.eval_crop, 2. / 3, lb_ignore)),
              ("msf", MscEvalV0(cfg.n_cats, cfg.eval_scales, True, lb_ignore))]
    for name, evaluator in passes:
        logger.info("compute %s metrics", name)
        metrics = evaluator(net, dl)
        heads.append(name)
        mious.append(metrics["miou"])
        cat_ious.append(metrics["ious"])
    rows = [["cat %d" % c] + ["%.6f" % ious[c] for ious in cat_ious] for c in range(cfg.n_cats)]
    rows.append(["mious"] + ["%.6f" % m for m in mious])
    net.aux_mode = org_aux
    return ["iou"] + heads, rows
