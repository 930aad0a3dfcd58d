"""A tiny training with the slow-burn bugs whose shim signals issue 15's rules read.

--no-zero-grad      optimizer.zero_grad() never called: gradients accumulate over the run
--accum K           intended gradient accumulation: K backward passes per optimizer step
--lr-after-step     the LR is set after optimizer.step() (warm-up from 0): step 1 runs at
                    the constructor's LR, step 2 at the warm-up's first value
--steplr            a StepLR(step_size=2) stepped every iteration
--softmax           the model applies softmax, then cross-entropy on top
"""
import argparse

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

p = argparse.ArgumentParser()
p.add_argument("--steps", type=int, default=40, help="backward passes")
p.add_argument("--no-zero-grad", action="store_true")
p.add_argument("--accum", type=int, default=1)
p.add_argument("--lr-after-step", action="store_true")
p.add_argument("--steplr", action="store_true")
p.add_argument("--softmax", action="store_true")
args = p.parse_args()

torch.manual_seed(0)
torch.set_num_threads(1)
C = 4
BASE_LR = 0.05


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(8, C, 1)

    def forward(self, x):
        y = self.b(F.relu(self.a(x)))
        return y.softmax(1) if args.softmax else y


g = torch.Generator().manual_seed(0)
lab = torch.randint(0, C, (args.steps * 2, 16, 16), generator=g)
img = F.one_hot(lab, C).permute(0, 3, 1, 2).float()[:, :3]
loader = DataLoader(TensorDataset(img + 0.1 * torch.randn(img.shape, generator=g), lab), batch_size=2)
model = Net()
opt = torch.optim.SGD(model.parameters(), lr=BASE_LR)
sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5) if args.steplr else None
crit = nn.CrossEntropyLoss()


def warmup_lr(it):
    return BASE_LR * min(1.0, it / 10)


n = 0
for i, (x, y) in enumerate(loader):
    loss = crit(model(x), y) / args.accum
    loss.backward()
    n += 1
    if n % args.accum == 0:
        opt.step()
        if not args.no_zero_grad:
            opt.zero_grad()
        if args.lr_after_step:
            for grp in opt.param_groups:
                grp["lr"] = warmup_lr(n // args.accum - 1)
        if sched is not None:
            sched.step()
    if n >= args.steps:
        break
print("done", n)
