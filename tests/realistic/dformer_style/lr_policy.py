"""DFormer-style LR policy: linear warm-up from 0, then poly decay to 0; the training loop
asks for the LR of the current iteration and writes it into every param group itself."""


class WarmUpPolyLR:
    def __init__(self, start_lr, lr_power, total_iters, warmup_steps):
        self.start_lr = start_lr
        self.lr_power = lr_power
        self.total_iters = total_iters + 0.0
        self.warmup_steps = warmup_steps

    def get_lr(self, cur_iters):
        if cur_iters < self.warmup_steps:
            return self.start_lr * (cur_iters / self.warmup_steps)
        return self.start_lr * ((1 - float(cur_iters) / self.total_iters) ** self.lr_power)
