"""A short healthy CPU training (40 steps): raises none of the GPU-side findings."""
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "faults"))

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

from _synth import TinySegNet, loaders, seed_all  # noqa: E402

NUM_CLASSES = 13

seed_all(0)
train_loader, _ = loaders(NUM_CLASSES)
model = TinySegNet(4, NUM_CLASSES)
criterion = nn.CrossEntropyLoss(ignore_index=-1)
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
it = 0
total = 0.0
while it < 40:
    for rgb, depth, label in train_loader:
        it += 1
        loss = criterion(model(torch.cat([rgb, depth], 1)), label)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total += loss.item()
        if it >= 40:
            break
print(f"mean loss {total / it:.3f}")
