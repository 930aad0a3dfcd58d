"""A tiny DDP segmentation training for tests/test_distributed.py (CPU, gloo, seconds).

Launched by ``segwatch run --nproc 2 train_ddp.py -- --out DIR [--fault ...]`` (torchrun sets
RANK/WORLD_SIZE/MASTER_*). Each rank evaluates its shard of the validation set and writes its
own confusion matrix (rows = ground truth, columns = prediction) to OUT/cm_rank{R}_eval{I}.json,
so the test can check segwatch's merged matrix against the ranks' own.

Faults: ``same_batches`` (no DistributedSampler: every rank gets the same batches),
``nan_rankN`` (rank N's loss is NaN at one step, e.g. ``nan_rank1``; every rank then skips that optimizer step,
since the all-reduced gradients are NaN, so the weights stay finite).
"""
import argparse
import json
import os
import time

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

C = 4


def make_data(n, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, 4, 4, generator=g).repeat_interleave(4, 2).repeat_interleave(4, 3)  # 4x4 blocks
    y = (x[:, 0] * C).long().clamp(max=C - 1)     # the class is the first channel, quantized
    return TensorDataset(x, y)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, default=24)
    p.add_argument("--eval-every", type=int, default=12)
    p.add_argument("--sleep", type=float, default=0.0)
    p.add_argument("--fault", default="")
    a = p.parse_args()
    faults = set(filter(None, a.fault.split(",")))
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank, ws = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, C, 1))
    ddp = nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.5)
    train = make_data(64, 1)
    val = make_data(24, 2)
    if "same_batches" in faults:
        sampler = None
    else:
        sampler = DistributedSampler(train, num_replicas=ws, rank=rank, shuffle=True, seed=0)
    tl = DataLoader(train, batch_size=4, sampler=sampler, shuffle=False)
    vl = DataLoader(val, batch_size=4, sampler=DistributedSampler(val, num_replicas=ws, rank=rank, shuffle=False))
    step = 0
    n_eval = 0
    epoch = 0
    while step < a.steps:
        if sampler is not None:
            sampler.set_epoch(epoch)
        for x, y in tl:
            ddp.train()
            loss = F.cross_entropy(ddp(x), y)
            if f"nan_rank{rank}" in faults and step == 5:   # nan_rank1, nan_rank3, ...
                loss = loss * float("nan")
            opt.zero_grad()
            loss.backward()
            if all(torch.isfinite(q.grad).all() for q in ddp.parameters() if q.grad is not None):
                opt.step()
            step += 1
            if a.sleep:
                time.sleep(a.sleep)
            if step % a.eval_every == 0:
                ddp.eval()
                cm = torch.zeros(C, C, dtype=torch.long)
                with torch.no_grad():
                    for vx, vy in vl:
                        pred = ddp(vx).argmax(1)
                        cm += torch.bincount(vy.flatten() * C + pred.flatten(), minlength=C * C).view(C, C)
                with open(os.path.join(a.out, f"cm_rank{rank}_eval{n_eval}.json"), "w") as f:
                    json.dump(cm.tolist(), f)
                n_eval += 1
                print(f"rank {rank} step {step} loss {loss.item():.4f}", flush=True)
            if step >= a.steps:
                break
        epoch += 1
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
