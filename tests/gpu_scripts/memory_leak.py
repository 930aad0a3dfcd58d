"""A CUDA training that keeps its loss with its graph (``total += loss``) and its logits in a
list: every step keeps that step's activations alive, so the memory allocated after each
backward rises by tens of MiB per step. Needs a GPU (on CPU there is no CUDA memory to read).

Expected finding: resource.memory_growing (once the shim sends ``step.cuda_mem``).
"""
import torch
import torch.nn as nn

NUM_CLASSES = 13
STEPS = 60

device = "cuda" if torch.cuda.is_available() else "cpu"
torch.manual_seed(0)
model = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, NUM_CLASSES, 1)).to(device)
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
criterion = nn.CrossEntropyLoss()


class Batches(torch.utils.data.IterableDataset):
    def __iter__(self):
        g = torch.Generator().manual_seed(0)
        while True:
            img = torch.randn(8, 3, 256, 256, generator=g)
            yield img, (img[:, 0] > 0).long()


loader = torch.utils.data.DataLoader(Batches(), batch_size=None)
total = 0.0
kept = []
for it, (img, label) in enumerate(loader, 1):
    img, label = img.to(device), label.to(device)
    out = model(img)
    loss = criterion(out, label)
    optimizer.zero_grad()
    loss.backward(retain_graph=True)
    optimizer.step()
    total += loss          # the bug: keeps every step's graph alive
    kept.append(out)       # and every step's logits
    if it >= STEPS:
        break
print(f"mean loss {float(total) / STEPS:.3f}", flush=True)
