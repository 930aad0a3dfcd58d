"""BiSeNet's ``WarmupPolyLrScheduler``: exponential warm-up from ``warmup_ratio`` x the base
LR over ``warmup_iter`` iterations, then poly decay to 0 at ``max_iter``."""
import torch


class WarmupPolyLrScheduler(torch.optim.lr_scheduler._LRScheduler):
    def __init__(self, optimizer, power, max_iter, warmup_iter=500, warmup_ratio=5e-4, warmup="exp", last_epoch=-1):
        self.power, self.max_iter = power, max_iter
        self.warmup_iter, self.warmup_ratio, self.warmup = warmup_iter, warmup_ratio, warmup
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        return [self.get_lr_ratio() * lr for lr in self.base_lrs]

    def get_lr_ratio(self):
        if self.last_epoch < self.warmup_iter:
            alpha = self.last_epoch / self.warmup_iter
            if self.warmup == "linear":
                return self.warmup_ratio + (1 - self.warmup_ratio) * alpha
            return self.warmup_ratio ** (1. - alpha)
        real_iter = self.last_epoch - self.warmup_iter
        real_max_iter = self.max_iter - self.warmup_iter
        return (1 - real_iter / real_max_iter) ** self.power
