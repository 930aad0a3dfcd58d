"""The GPU tab and header line (issue 19), driven with Pilot and snapshotted, on events made
with the fake NVML (tests/gpu_fake) and the shim's CUDA-memory / data-wait fields; and the
recorded run (no GPU): the tab says "no NVIDIA GPU visible" and the header is unchanged."""
from __future__ import annotations

import io
import pathlib
import sys

import pytest
from rich.console import Console

from segwatch.protocol import make_event, read_events
from segwatch.tui import SegwatchApp

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "gpu_fake"))

import fake_nvml  # noqa: E402

from segwatch.supervisor.gpu import NvmlSampler  # noqa: E402

SIZE = (100, 32)
T0 = 1_700_000_000.0
GIB = 1 << 30


def screen_text(app) -> str:
    width, height = app.size
    console = Console(width=width, height=height, file=io.StringIO(), record=True,
                      force_terminal=True, color_system=None, legacy_windows=False)
    console.print(app.screen._compositor.render_update(full=True, screen_stack=app._background_screens))
    return console.export_text()


def gpu_run() -> list[dict]:
    """A short run of a fake 2-GPU machine: pid 4242 (the training) on GPU 0."""
    sampler = NvmlSampler(nvml=fake_nvml)
    fields = sampler.sample([4242])
    # the fake reports the test process's children on GPU 0: make the training's pid one of them
    fields["devices"][0]["procs"] = [{"pid": 4242, "mem": 3 * GIB}]
    evs = [make_event("status", t=T0, status="running", pid=4242),
           make_event("hello", t=T0 + 1, pid=4242, script="train.py", device="cuda:0", cuda=True,
                      num_workers=2),
           make_event("batch", t=T0 + 2, step=0, phase="train", pin_memory=False, num_workers=2,
                      inputs=[{"key": "rgb", "shape": [8, 3, 512, 512], "dtype": "torch.float32"}],
                      image_shape=[512, 512])]
    for s in range(1, 21):
        evs.append(make_event("step", t=T0 + 2 + s * 0.5, step=s, loss=1.0, data_wait=0.2, wall=0.5,
                              cuda_mem={"allocated": 2 * GIB, "reserved": 3 * GIB, "max_allocated": 5 * GIB // 2}))
    evs.append(make_event("gpu", t=T0 + 12, step=20, **fields))
    return evs


def no_gpu_run() -> list[dict]:
    with open(ROOT / "tests" / "data" / "recorded_run" / "events.jsonl", "rb") as fh:
        return list(read_events(fh))


async def test_gpu_tab_and_header_with_fake_nvml():
    app = SegwatchApp(events=gpu_run(), live=False)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("8")
        await pilot.pause()
        text = screen_text(app)
        assert "GPU 0  Fake GPU H100" in text and "GPU 1  Fake GPU A10" in text
        assert "87%" in text and "12.0 GiB / 80.0 GiB (15%)" in text
        assert "71 °C" in text and "312 W / 700 W" in text
        assert "pid 4242 3.0 GiB" in text and "999999" not in text
        assert "allocated 2.0 GiB" in text and "peak 2.5 GiB" in text
        assert "data wait: 40.0% of wall time" in text
        assert "num_workers=2" in text and "pin_memory=False" in text
        assert "16.0 img/s" in text   # 2 steps/s x 8 images
        header = text.splitlines()[:4]
        assert any("GPU0 87%" in line and "data wait 40.0%" in line for line in header), header
        assert "no NVIDIA GPU visible" not in text


@pytest.mark.slow
async def test_no_gpu_says_so_and_header_unchanged():
    app = SegwatchApp(events=no_gpu_run(), live=False)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        before = screen_text(app).splitlines()[:3]
        assert not any("GPU0" in line or "data wait" in line for line in before)
        await pilot.press("8")
        await pilot.pause()
        text = screen_text(app)
        assert "no NVIDIA GPU visible" in text
        assert "In the training" not in text
    app = SegwatchApp(events=no_gpu_run(), live=False, lang="zh")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("8")
        await pilot.pause()
        assert "未检测到 NVIDIA GPU" in screen_text(app)


@pytest.mark.slow
def test_gpu_panel_snapshot(snap_compare):
    assert snap_compare(SegwatchApp(events=gpu_run(), live=False), terminal_size=SIZE, press=["8"])
