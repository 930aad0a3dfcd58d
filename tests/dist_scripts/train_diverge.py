"""A tiny DDP training for tests/test_dist_sampling.py (CPU, gloo): 300 steps by default.

``--diverge-at S``: from step S on, rank 1's gradients come out of DDP's all-reduce doubled
(a comm hook that scales its own copy: the ranks' gradients are no longer equal after the
all-reduce, as with a rank that averages by the wrong world size). The gradients differ at
the end of backward, where the shim reads them.
"""
import argparse

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

C = 4


def make_data(n, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, 4, 4, generator=g).repeat_interleave(4, 2).repeat_interleave(4, 3)
    y = (x[:, 0] * C).long().clamp(max=C - 1)
    return TensorDataset(x, y)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--diverge-at", type=int, default=0)
    a = p.parse_args()
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank, ws = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, C, 1))
    ddp = nn.parallel.DistributedDataParallel(model)
    step = [0]

    def comm_hook(state, bucket):
        t = bucket.buffer().div_(ws)
        fut = dist.all_reduce(t, async_op=True).get_future()

        def done(f):
            v = f.value()[0]
            if a.diverge_at and rank == 1 and step[0] >= a.diverge_at:
                v = v * 2.0
            return v
        return fut.then(done)

    ddp.register_comm_hook(None, comm_hook)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
    train = make_data(256, 1)
    sampler = DistributedSampler(train, num_replicas=ws, rank=rank, shuffle=True, seed=0)
    tl = DataLoader(train, batch_size=4, sampler=sampler)
    epoch = 0
    while step[0] < a.steps:
        sampler.set_epoch(epoch)
        for x, y in tl:
            step[0] += 1
            loss = F.cross_entropy(ddp(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if step[0] >= a.steps:
                break
        epoch += 1
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
