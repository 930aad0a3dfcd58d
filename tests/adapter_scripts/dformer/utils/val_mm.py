"""Replica of DFormer's utils/val_mm.py: whole-image or sliding-window evaluation into the
Metrics class (``metrics.update(preds.softmax(dim=1), labels)``)."""
import math

import torch
import torch.nn.functional as F

from utils.metrics_new import Metrics

SKIP_UPDATE = False  # the fault: update() commented out while debugging


def slide_inference(model, img, modal_x, config):
    """Sliding-window inference over crops of ``config.eval_crop_size`` (overlapping)."""
    h_crop, w_crop = config.eval_crop_size
    h_stride = int(math.ceil(h_crop * config.eval_stride_rate))
    w_stride = int(math.ceil(w_crop * config.eval_stride_rate))
    batch_size, _, h_img, w_img = img.size()
    num_classes = config.num_classes
    h_grids = max(h_img - h_crop + h_stride - 1, 0) // h_stride + 1
    w_grids = max(w_img - w_crop + w_stride - 1, 0) // w_stride + 1
    preds = img.new_zeros((batch_size, num_classes, h_img, w_img))
    count_mat = img.new_zeros((batch_size, 1, h_img, w_img))
    for h_idx in range(h_grids):
        for w_idx in range(w_grids):
            y1 = h_idx * h_stride
            x1 = w_idx * w_stride
            y2 = min(y1 + h_crop, h_img)
            x2 = min(x1 + w_crop, w_img)
            y1 = max(y2 - h_crop, 0)
            x1 = max(x2 - w_crop, 0)
            crop_img = img[:, :, y1:y2, x1:x2]
            crop_modal = modal_x[:, :, y1:y2, x1:x2]
            crop_seg_logit = model(crop_img, crop_modal)
            preds += F.pad(crop_seg_logit, (int(x1), int(preds.shape[3] - x2), int(y1), int(preds.shape[2] - y2)))
            count_mat[:, :, y1:y2, x1:x2] += 1
    return preds / count_mat


@torch.no_grad()
def evaluate(model, dataloader, config, device, engine=None, save_dir=None, sliding=False):
    print("Evaluating...", flush=True)
    model.eval()
    n_classes = config.num_classes
    metrics = Metrics(n_classes, config.background, device)
    for idx, minibatch in enumerate(dataloader):
        images = minibatch["data"]
        labels = minibatch["label"]
        modal_xs = minibatch["modal_x"]
        images = [images.to(device), modal_xs.to(device)]
        labels = labels.to(device)
        if sliding:
            preds = slide_inference(model, images[0], images[1], config).softmax(dim=1)
        else:
            preds = model(images[0], images[1]).softmax(dim=1)
        if not SKIP_UPDATE:
            metrics.update(preds, labels)
    return metrics
