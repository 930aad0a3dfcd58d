"""A short healthy training (40 steps; on CUDA when there is one): raises none of the GPU-side
findings (its memory after backward is flat from step 2 on)."""
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "faults"))

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

from _synth import TinySegNet, loaders, seed_all  # noqa: E402

NUM_CLASSES = 13

seed_all(0)
train_loader, _ = loaders(NUM_CLASSES)
device = "cuda" if torch.cuda.is_available() else "cpu"
model = TinySegNet(4, NUM_CLASSES).to(device)
criterion = nn.CrossEntropyLoss(ignore_index=-1)
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
it = 0
total = 0.0
while it < 40:
    for rgb, depth, label in train_loader:
        it += 1
        rgb, depth, label = rgb.to(device), depth.to(device), label.to(device)
        loss = criterion(model(torch.cat([rgb, depth], 1)), label)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total += loss.item()
        if it >= 40:
            break
print(f"mean loss {total / it:.3f}")
