"""``OhemCELoss`` as CoinCheung/BiSeNet has it: per-pixel CE (``reduction='none'``,
``ignore_index=lb_ignore``), then the mean of the pixels whose loss exceeds -log(thresh),
or of the ``n_min`` hardest when too few do."""
import torch
import torch.nn as nn


class OhemCELoss(nn.Module):
    def __init__(self, thresh, lb_ignore=255):
        super().__init__()
        self.thresh = -torch.log(torch.tensor(thresh, requires_grad=False, dtype=torch.float))
        self.lb_ignore = lb_ignore
        self.criteria = nn.CrossEntropyLoss(ignore_index=lb_ignore, reduction="none")

    def forward(self, logits, labels):
        n_min = labels[labels != self.lb_ignore].numel() // 16
        loss = self.criteria(logits, labels).view(-1)
        loss_hard = loss[loss > self.thresh]
        if loss_hard.numel() < n_min:
            loss_hard, _ = loss.topk(n_min)
        return torch.mean(loss_hard)
