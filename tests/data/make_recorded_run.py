"""Build tests/data/recorded_run/: a small, deterministic recorded run for the TUI tests.

The story is the guide's: a DFormer-style RGB-D training on SUNRGBD (37 classes) whose
labels carry 255 for "unlabeled" while the config says ignore_index -1, and whose model
collapses to class 0 (wall) after a few steps. The supervisor's policy pauses it at the
collapse, the user resumes it, and it finishes with exit status 0 after three
evaluations that all print the same mIoU = p_wall / 37.

Every timestamp is fixed (T0 + offsets) and the noise comes from a seeded generator, so
running this script twice writes byte-identical files:

    python tests/data/make_recorded_run.py [OUT_DIR]
"""
from __future__ import annotations

import json
import math
import pathlib
import random
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from segwatch.protocol import encode, make_event  # noqa: E402

T0 = 1_700_000_000.0
STEPS = 120
COLLAPSE_AT = 16        # from this step on, every prediction is class 0
PAUSE_AT = 42           # the policy pauses the run here (grace 20 + persistence)
EVAL_EVERY = 40
C = 37
NAMES = [
    "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf",
    "picture", "counter", "blinds", "desk", "shelves", "curtain", "dresser", "pillow", "mirror",
    "floor_mat", "clothes", "ceiling", "books", "fridge", "tv", "paper", "towel", "shower_curtain",
    "box", "whiteboard", "person", "night_stand", "toilet", "sink", "lamp", "bathtub", "bag",
]
LABEL_PX = 2 * 480 * 640
LOGIT_PX = 2 * 120 * 160
IGNORE_SHARE = 0.12
LAYERS = [
    "decode_head.conv_seg.weight", "decode_head.fuse.0.weight", "decode_head.squeeze.conv.weight",
    "backbone.stages.3.blocks.1.mlp.fc2.weight", "backbone.stages.3.blocks.0.attn.proj.weight",
    "backbone.stages.2.blocks.5.mlp.fc1.weight", "backbone.stages.1.blocks.1.dwconv.weight",
    "backbone.stem.0.weight",
]


def class_shares() -> list[float]:
    w = [1.0 / (i + 1) ** 1.1 for i in range(C)]
    s = sum(w)
    return [x / s for x in w]


def split(total: int, shares: list[float]) -> list[int]:
    counts = [int(total * p) for p in shares]
    counts[0] += total - sum(counts)
    return counts


def build() -> list[dict]:
    rnd = random.Random(1234)
    shares = class_shares()
    events: list[dict] = []
    clock = [T0]

    def at(dt: float) -> float:
        clock[0] = round(clock[0] + dt, 3)
        return clock[0]

    def ev(type_: str, dt: float = 0.01, shim: bool = True, **fields) -> None:
        fields = dict(fields)
        if shim:
            fields.setdefault("rank", 0)
            fields.setdefault("world_size", 1)
        events.append(make_event(type_, t=at(dt), **fields))

    config = {
        "dataset": {"name": "SUNRGBD", "num_classes": C, "ignore_index": -1, "class_names": NAMES},
        "train": {"expected_lr": 8e-5},
        "thresholds": {"grad_norm_min": 1e-7, "grad_norm_max": 1000.0, "min_pred_classes": 5,
                       "miou_stuck_evals": 3},
        "policy": {"on_collapse": "pause", "on_nonfinite": "warn", "grace_steps": 20},
        "sampling": {"overhead_budget": 0.01},
        "adapter": "auto",
    }
    ev("status", shim=False, status="starting", pid=4242, exit_code=None)
    ev("status", shim=False, status="running", pid=4242, exit_code=None)
    ev("hello", pid=4242, script="train.py", argv=["train.py", "--lr", "8e-5"], cwd="/work/DFormer",
       python="3.11.7", torch="2.13.0", device="cpu", cuda=False, debug=False, config=config,
       shim_version="0.1.0")
    ev("output", shim=False, stream="stdout", line="loading SUNRGBD: 5285 train / 5050 val images")
    ev("model", step=0, cls="DFormer", params=39_012_345, trainable=39_012_345,
       site="decode_head.conv_seg", out_channels=C, num_classes=C)
    ev("state_dict", step=0, module="DFormer", missing=4, unexpected=0, total=412, loaded=408,
       strict=False, examples_missing=["decode_head.conv_seg.weight", "decode_head.conv_seg.bias",
                                       "decode_head.fuse.0.weight", "decode_head.fuse.1.weight"])

    valid = int(LABEL_PX * (1 - IGNORE_SHARE))
    ignore_px = LABEL_PX - valid
    loss = 3.62
    gnorm = 6.0
    miou_guide = 100.0 * shares[0] / C
    eval_index = 0
    for step in range(1, STEPS + 1):
        epoch, index = divmod(step - 1, 60)
        # one DataLoader batch: labels carry 255 where the config expects -1
        jitter = [max(1e-6, p * (1 + 0.15 * (rnd.random() - 0.5))) for p in shares]
        s = sum(jitter)
        hist = split(valid, [p / s for p in jitter])
        ev("batch", dt=0.05, step=step, phase="train", loader=0, index=index, length=60, epoch=epoch,
           labels={"key": "label", "shape": [2, 480, 640], "dtype": "int64", "min": 0, "max": 255,
                   "total": LABEL_PX, "ignore": 0, "ignore_value": -1, "hist": hist,
                   "oor": {"255": ignore_px}, "fractional": 0, "boundary": 0.0},
           inputs=[
               {"key": "rgb", "shape": [2, 3, 480, 640], "dtype": "float32",
                "mean": round(0.03 + 0.01 * rnd.random(), 4), "std": round(0.98 + 0.02 * rnd.random(), 4),
                "min": -2.118, "max": 2.64, "nonfinite": 0},
               {"key": "depth", "shape": [2, 1, 480, 640], "dtype": "float32",
                "mean": round(0.41 + 0.02 * rnd.random(), 4), "std": 0.27, "min": 0.0, "max": 1.0,
                "nonfinite": 0},
           ],
           image_shape=[480, 640], align=0.81, align_flipped=0.22)
        # the logits: diverse at first, then every pixel is wall
        gt_small = split(int(LOGIT_PX * (1 - IGNORE_SHARE)), shares)
        if step < COLLAPSE_AT:
            k = max(2, 22 - step)
            top = sorted(range(C), key=lambda i: -shares[i])[:k]
            dom = min(0.97, 0.35 + 0.04 * step)
            pred_shares = [0.0] * C
            pred_shares[0] = dom
            for i in top[1:]:
                pred_shares[i] = (1 - dom) / (k - 1)
            pred = split(LOGIT_PX, pred_shares)
            unique = k
        else:
            pred = [LOGIT_PX] + [0] * (C - 1)
            unique = 1
        correct = min(pred[0], gt_small[0]) if step >= COLLAPSE_AT else int(sum(gt_small) * 0.3)
        ev("preds", step=step, phase="train", shape=[2, C, 120, 160], channels=C, hist=pred,
           gt_hist=gt_small, unique=unique, correct=correct, valid=sum(gt_small))
        # the step: the loss stalls once the model predicts only wall
        if step < COLLAPSE_AT:
            loss = loss - 0.04 + 0.01 * (rnd.random() - 0.5)
            gnorm = gnorm * 0.8
        else:
            loss = 2.95 + 0.01 * math.sin(step / 3) + 0.004 * (rnd.random() - 0.5)
            gnorm = max(2e-4, gnorm * 0.9)
        layer = [[name, round(gnorm * (0.6 ** i), 8)] for i, name in enumerate(LAYERS)]
        ev("step", dt=0.03, step=step, loss=round(loss, 5), grad_norm=round(gnorm, 8), grad_nonfinite=0,
           lr=[8e-5, 8e-5], layer_norms=layer, update_ratio=round(1e-3 * gnorm / 6.0, 8), no_optim=0,
           never_stepped=0, no_grad=0, with_grad=412, eval_modules=0, norm_modules=58,
           backward_total=step, optimizer_steps_total=step, loss_nonfinite_total=0, scale=None,
           epoch=epoch)
        if step % 10 == 0:
            ev("output", shim=False, stream="stdout",
               line=f"Epoch {epoch} iter {index + 1}/60 loss={loss:.4f} lr=8.0e-05")
            ev("proc", shim=False, cpu=round(180.0 + 5 * math.sin(step), 1),
               rss=2_100_000_000 + step * 1_000_000, procs=3, gpu_mem=None)
        if step % 20 == 0:
            ev("overhead", step=step, share=round(0.006 + 0.0005 * math.cos(step), 5), budget=0.01,
               intervals={"batch": 1, "preds": 1, "step": 1, "layer_norms": 4}, dropped=0)
        if step == PAUSE_AT:
            ev("action", shim=False, kind="pause", finding="pred.collapse", step=step, by="policy")
            ev("status", shim=False, status="paused", pid=4242, exit_code=None)
            ev("output", shim=False, stream="stderr",
               line="segwatch: paused the run: pred.collapse (press r to resume)")
            ev("action", dt=7.5, shim=False, kind="resume", finding=None, step=step, by="user")
            ev("status", shim=False, status="running", pid=4242, exit_code=None)
        if step % EVAL_EVERY == 0:
            gt_rows = split(1_000_000, shares)
            matrix = [[0] * C for _ in range(C)]
            for i in range(C):
                matrix[i][0] = gt_rows[i]
            ev("eval", dt=0.8, step=step, index=eval_index, batches=25, expected=25, aborted=False,
               exception=None, num_classes=C, ignore_index=-1, matrix=matrix, oor=0,
               size_mismatch=0, pixels=sum(gt_rows))
            ev("output", shim=False, stream="stdout", line=f"Eval {eval_index}: mIoU {miou_guide:.2f}")
            ev("script_metric", name="miou", value=round(miou_guide, 2), step=step,
               line=f"Eval {eval_index}: mIoU {miou_guide:.2f}", source="output")
            eval_index += 1
    ev("bye", step=STEPS, dropped=0, events=len(events), share=0.0063, disabled=[], reason="exit")
    ev("status", shim=False, status="finished", pid=4242, exit_code=0)
    return events


def write(out_dir: pathlib.Path) -> list[dict]:
    events = build()
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "events.jsonl", "wb") as fh:
        for e in events:
            fh.write(encode(e))
    meta = {
        "supervisor_pid": 4241, "child_pid": 4242, "socket": "/tmp/segwatch-fixture/segwatch.sock",
        "status": "finished", "exit_code": 0, "started": events[0]["t"], "ended": events[-1]["t"],
        "script": "train.py", "argv": ["--lr", "8e-5"], "recorded_fixture": True,
    }
    (out_dir / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
    return events


if __name__ == "__main__":
    target = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else pathlib.Path(__file__).with_name("recorded_run")
    evs = write(target)
    print(f"wrote {len(evs)} events to {target}")
