"""Fault: the optimizer is built from the model's parameters, then the model is
re-created by ``load_pretrained()`` (which builds a fresh network and loads weights
into it) and the training loop uses the new one.  backward fills the new model's
gradients; the optimizer keeps stepping the old, orphaned parameters.  Nothing learns.

Expected finding: optim.params_not_stepped.  FAULT_STEP = 0.
"""
import torch
import torch.nn as nn

from _synth import TinySegNet, evaluate, loaders, seed_all

FAULT_STEP = 0
NUM_CLASSES = 13


def build_model():
    return TinySegNet(4, NUM_CLASSES)


def load_pretrained(model):
    fresh = build_model()
    fresh.load_state_dict(model.state_dict())
    return fresh


seed_all(0)
train_loader, val_loader = loaders(NUM_CLASSES)
model = build_model()
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
model = load_pretrained(model)  # BUG: after the optimizer was created
criterion = nn.CrossEntropyLoss(ignore_index=-1)
it = 0
for epoch in range(1, 6):
    model.train()
    for rgb, depth, label in train_loader:
        it += 1
        loss = criterion(model(torch.cat([rgb, depth], 1)), label)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if it % 10 == 0:
            print(f"iter {it} loss {loss.item():.4f}", flush=True)
    print(f"epoch {epoch}: mIoU: {evaluate(model, val_loader, NUM_CLASSES):.2f}", flush=True)
