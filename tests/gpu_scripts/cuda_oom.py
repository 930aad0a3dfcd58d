"""A tiny CPU training that dies at step 12 the way a GPU run dies of CUDA OOM: the
exception is a real ``torch.cuda.OutOfMemoryError`` (constructible without a GPU), raised
from the training loop and not caught. Steps are slowed a little so that the supervisor
samples the process tree (and the fake NVML) a few times.

Expected finding: resource.cuda_oom (step 12, batch 8, crop 32x32).
"""
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "faults"))

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

from _synth import TinySegNet, loaders, seed_all  # noqa: E402

NUM_CLASSES = 13
OOM_AT = 12

seed_all(0)
train_loader, _ = loaders(NUM_CLASSES)
model = TinySegNet(4, NUM_CLASSES)
criterion = nn.CrossEntropyLoss(ignore_index=-1)
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
it = 0
for rgb, depth, label in train_loader:
    it += 1
    if it == OOM_AT:
        raise torch.cuda.OutOfMemoryError(
            "CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 79.19 GiB "
            "of which 1.06 GiB is free.")
    loss = criterion(model(torch.cat([rgb, depth], 1)), label)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    time.sleep(0.25)
