"""Fault: class-balanced loss weights computed the wrong way round, ``w_c = freq_c``
instead of ``1 / freq_c`` (or median-frequency balancing).  The two dominant classes
(wall, floor) get almost all the weight, the rare classes almost none: the model only
ever predicts two or three classes, and the loss looks great.

Expected finding: pred.low_diversity.  FAULT_STEP = 0.
"""
import torch
import torch.nn as nn

from _synth import TinySegNet, evaluate, loaders, seed_all

FAULT_STEP = 0
NUM_CLASSES = 13


def class_weights(loader, n):
    counts = torch.zeros(n)
    for _, _, label in loader:
        valid = label[label >= 0]
        counts += torch.bincount(valid, minlength=n).float()
    freq = counts / counts.sum()
    return freq / freq.mean()  # BUG: should be 1 / freq (normalised)


seed_all(0)
train_loader, val_loader = loaders(NUM_CLASSES)
model = TinySegNet(4, NUM_CLASSES)
weights = class_weights(train_loader, NUM_CLASSES)
print("class weights:", [round(w, 3) for w in weights.tolist()], flush=True)
criterion = nn.CrossEntropyLoss(weight=weights, ignore_index=-1)
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
it = 0
for epoch in range(1, 6):
    model.train()
    for rgb, depth, label in train_loader:
        it += 1
        logits = model(torch.cat([rgb, depth], 1))
        loss = criterion(logits, label)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if it % 10 == 0:
            print(f"iter {it} loss {loss.item():.4f} classes predicted {logits.argmax(1).unique().numel()}", flush=True)
    print(f"epoch {epoch}: mIoU: {evaluate(model, val_loader, NUM_CLASSES):.2f}", flush=True)
