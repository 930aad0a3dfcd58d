"""A training in the shape of CoinCheung/BiSeNet's ``tools/train_amp.py``, scaled down to a
CPU test.  It knows nothing about segwatch.

- the config is a Python file (``--config configs/bisenetv2_tiny.py``) read into ``cfg``;
- ``set_model`` builds BiSeNetV2 with one ``OhemCELoss(0.7, lb_ignore)`` for the main
  output and one per auxiliary head (``lb_ignore`` from the dataset: 255); the model returns
  5 outputs in training and the loss is ``loss_pre + sum(loss_aux)``;
- SGD with four groups (wd / no-wd, the heads at 10x); ``WarmupPolyLrScheduler`` (exp warm-up
  from 0.1x, poly to 0); GradScaler/autocast as in the AMP script (disabled on CPU);
- the whole training is one pass of one loader (``max_iter`` batches); the log line every
  ``print_every`` iterations; no evaluation until the end, where ``eval_model`` runs the
  single-scale, sliding-window and multi-scale+flip passes and the table is logged.

``--fault no_train_id``: the dataset's ``lb_map`` is None, so raw label ids (21..26) reach a
19-class OHEM CE: segwatch must name the out-of-range labels before CE crashes on them.
``--fault no_ignore``: the OHEM losses are built with ``lb_ignore=-100`` (the default of
BiSeNet's ``BaseDataset``, kept by a custom dataset), so the 255s are targets: segwatch must
name the mismatch before CE crashes.
"""
import argparse
import importlib.util
import logging
import os
import sys

import torch

from bisenetv2 import model_factory
from cityscapes_data import CityScapes, get_data_loader, write_fake_cityscapes
from evaluate import _table, eval_model
from lr_scheduler import WarmupPolyLrScheduler
from ohem_ce_loss import OhemCELoss


class cfg_dict:
    def __init__(self, d):
        self.__dict__ = d
        self.get = d.get


def set_cfg_from_file(cfg_path):
    spec = importlib.util.spec_from_file_location("cfg_file", cfg_path)
    cfg_file = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cfg_file)
    return cfg_dict(cfg_file.cfg)


def parse_args():
    parse = argparse.ArgumentParser()
    parse.add_argument("--config", dest="config", type=str,
                       default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", "bisenetv2_tiny.py"))
    parse.add_argument("--print-every", type=int, default=20)
    parse.add_argument("--fault", default="none", choices=["none", "no_train_id", "no_ignore"])
    return parse.parse_args()


args = parse_args()
cfg = set_cfg_from_file(args.config)


def set_model(lb_ignore=255):
    net = model_factory[cfg.model_type](cfg.n_cats)
    net.train()
    criteria_pre = OhemCELoss(0.7, lb_ignore)
    criteria_aux = [OhemCELoss(0.7, lb_ignore) for _ in range(cfg.num_aux_heads)]
    return net, criteria_pre, criteria_aux


def set_optimizer(model):
    wd_params, nowd_params, lr_mul_wd_params, lr_mul_nowd_params = model.get_params()
    params_list = [
        {"params": wd_params},
        {"params": nowd_params, "weight_decay": 0},
        {"params": lr_mul_wd_params, "lr": cfg.lr_start * 10},
        {"params": lr_mul_nowd_params, "weight_decay": 0, "lr": cfg.lr_start * 10},
    ]
    return torch.optim.SGD(params_list, lr=cfg.lr_start, momentum=0.9, weight_decay=cfg.weight_decay)


def train():
    logger = logging.getLogger()
    dl = get_data_loader(cfg, mode="train")
    lb_ignore = -100 if args.fault == "no_ignore" else dl.dataset.lb_ignore
    net, criteria_pre, criteria_aux = set_model(lb_ignore)
    optim = set_optimizer(net)
    scaler = torch.amp.GradScaler("cpu", enabled=cfg.use_fp16)
    lr_schdr = WarmupPolyLrScheduler(optim, power=0.9, max_iter=cfg.max_iter, warmup_iter=cfg.warmup_iters,
                                     warmup_ratio=0.1, warmup="exp", last_epoch=-1)
    loss_sum = 0.0
    for it, (im, lb) in enumerate(dl):
        lb = torch.squeeze(lb, 1)
        optim.zero_grad()
        with torch.autocast("cpu", enabled=cfg.use_fp16):
            logits, *logits_aux = net(im)
            loss_pre = criteria_pre(logits, lb)
            loss_aux = [crit(lgt, lb) for crit, lgt in zip(criteria_aux, logits_aux)]
            loss = loss_pre + sum(loss_aux)
        scaler.scale(loss).backward()
        scaler.step(optim)
        scaler.update()
        loss_sum += loss.item()
        if (it + 1) % args.print_every == 0:
            lr = lr_schdr.get_lr()
            logger.info("iter: %d/%d, lr: %.6f, loss: %.4f, loss_pre: %.4f", it + 1, cfg.max_iter,
                        sum(lr) / len(lr), loss_sum / args.print_every, loss_pre.item())
            loss_sum = 0.0
        lr_schdr.step()

    os.makedirs(cfg.respth, exist_ok=True)
    torch.save(net.state_dict(), os.path.join(cfg.respth, "model_final.pth"))
    logger.info("\nevaluating the final model")
    heads, rows = eval_model(cfg, net)
    logger.info("\neval results of miou metric:\n" + _table(heads, rows))


def main():
    torch.manual_seed(0)
    torch.set_num_threads(1)
    CityScapes.FAULT = args.fault
    if not os.path.exists(cfg.train_im_anns):
        write_fake_cityscapes(cfg.im_root)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(filename)s(%(lineno)d): %(message)s",
                        stream=sys.stdout)
    train()


if __name__ == "__main__":
    main()
