"""The GPU tab: per device utilization, VRAM, temperature, power and this training's processes
(``gpu`` events, NVML sampled by the supervisor), then what the shim measured in the training:
CUDA memory after backward, images/s and the share of time spent waiting for batches.

Without a ``gpu`` event (no NVIDIA GPU, or no nvidia-ml-py) it says so and nothing more.
"""
from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.widgets import Static

from segwatch.tui.panels.base import Panel, age_note, reading, sget, value_style
from segwatch.tui.text import fbytes, fpct
from segwatch.tui.widgets import hbar

NO_GPU = {"en": "no NVIDIA GPU visible", "zh": "未检测到 NVIDIA GPU"}
_WORDS = {
    "title": ("GPUs (NVML, sampled by the supervisor)", "GPU（NVML，由 supervisor 采样）"),
    "util": ("util", "利用率"),
    "vram": ("VRAM", "显存"),
    "temp": ("temp", "温度"),
    "power": ("power", "功耗"),
    "ours": ("this training", "本训练进程"),
    "none": ("none", "无"),
    "train": ("In the training (shim)", "训练进程内（shim）"),
    "cuda": ("CUDA memory after backward", "反向传播后的 CUDA 显存"),
    "alloc": ("allocated", "已分配"),
    "reserved": ("reserved", "已保留"),
    "peak": ("peak", "峰值"),
    "throughput": ("throughput", "吞吐"),
    "wait": ("data wait", "等待数据"),
    "of_wall": ("of wall time", "的时间"),
}


def w(key: str, lang: str) -> str:
    en, zh = _WORDS[key]
    return zh if lang == "zh" else en


def _pct_style(frac: float | None, warn: float, bad: float) -> str:
    if frac is None:
        return ""
    return "bold red" if frac >= bad else ("yellow" if frac >= warn else "green")


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def device_lines(dev: dict, lang: str) -> Text:
    t = Text()
    t.append(f"GPU {dev.get('index', '?')}", style="bold")
    if dev.get("name"):
        t.append(f"  {dev['name']}", style="dim")
    util = _num(dev.get("util"))
    t.append(f"\n  {w('util', lang):<6} ", style="dim")
    if util is not None:
        t.append(hbar(util / 100.0, 20), style="green")
        t.append(f" {util:.0f}%")
    else:
        t.append("–")
    used, total = _num(dev.get("mem_used")), _num(dev.get("mem_total"))
    t.append(f"\n  {w('vram', lang):<6} ", style="dim")
    if used is not None and total:
        frac = used / total
        t.append(hbar(frac, 20), style=_pct_style(frac, 0.85, 0.95))
        t.append(f" {fbytes(used)} / {fbytes(total)} ({frac * 100:.0f}%)")
    else:
        t.append(fbytes(used) if used is not None else "–")
    temp, power, limit = _num(dev.get("temp")), _num(dev.get("power_w")), _num(dev.get("power_limit_w"))
    t.append(f"\n  {w('temp', lang)} ", style="dim")
    t.append(f"{temp:.0f} °C" if temp is not None else "–", style="bold red" if (temp or 0) >= 85 else "")
    t.append(f"   {w('power', lang)} ", style="dim")
    t.append(f"{power:.0f} W" if power is not None else "–")
    if limit:
        t.append(f" / {limit:.0f} W", style="dim")
    procs = dev.get("procs") or []
    t.append(f"\n  {w('ours', lang)}: ", style="dim")
    if procs:
        t.append(", ".join(f"pid {p.get('pid')} {fbytes(p.get('mem')) if p.get('mem') is not None else ''}".rstrip()
                           for p in procs if isinstance(p, dict)))
    else:
        t.append(w("none", lang), style="dim")
    return t


def training_lines(state: Any, lang: str) -> Text | None:
    """CUDA memory, images/s and data-wait share measured by the shim, or None when unknown."""
    mem_r = reading(state, "cuda_mem")
    wait_r = reading(state, "data_wait")
    ips = sget(state, "images_per_sec")
    if mem_r is None and wait_r is None:
        return None
    t = Text(w("train", lang), style="bold")
    if mem_r is not None and isinstance(mem_r.value, dict):
        m = mem_r.value
        t.append(f"\n  {w('cuda', lang)}: ", style="dim")
        t.append(f"{w('alloc', lang)} {fbytes(m.get('allocated'))}", style=value_style(state, mem_r))
        t.append(f"  {w('reserved', lang)} {fbytes(m.get('reserved'))}", style=value_style(state, mem_r))
        peak = sget(state, "cuda_peak")
        if peak is not None:
            t.append(f"  {w('peak', lang)} {fbytes(peak)}", style=value_style(state, mem_r))
        t.append_text(age_note(state, mem_r, lang))
    if wait_r is not None and isinstance(wait_r.value, (int, float)):
        t.append(f"\n  {w('wait', lang)}: ", style="dim")
        t.append(fpct(wait_r.value), style=value_style(state, wait_r, _pct_style(wait_r.value, 0.15, 0.30)))
        t.append(f" {w('of_wall', lang)}", style="dim")
        facts = sget(state, "loader_facts", {})
        if facts:
            t.append("  (" + ", ".join(f"{k}={v}" for k, v in sorted(facts.items())) + ")", style="dim")
        t.append_text(age_note(state, wait_r, lang))
    if isinstance(ips, (int, float)):
        t.append(f"\n  {w('throughput', lang)}: ", style="dim")
        t.append(f"{ips:.1f} img/s")
    return t


def header_line(state: Any) -> Text | None:
    """The header's GPU line: per GPU util and VRAM, then images/s and the data-wait share;
    None when none of them is known (no GPU, no shim measurement: the header stays as it was)."""
    gpu = sget(state, "gpu")
    devices = gpu.get("devices") if isinstance(gpu, dict) else None
    wait_r = reading(state, "data_wait")
    ips = sget(state, "images_per_sec")
    if not devices and wait_r is None:
        return None
    t = Text()
    for dev in (devices or [])[:4]:
        util, used, total = _num(dev.get("util")), _num(dev.get("mem_used")), _num(dev.get("mem_total"))
        if t:
            t.append("  ")
        t.append(f"GPU{dev.get('index', '?')} ", style="dim")
        t.append(f"{util:.0f}%" if util is not None else "–")
        if used is not None and total:
            t.append(f" {fbytes(used)}/{fbytes(total)}", style=_pct_style(used / total, 0.85, 0.95))
    if devices and len(devices) > 4:
        t.append(f"  +{len(devices) - 4} GPUs", style="dim")
    if isinstance(ips, (int, float)):
        t.append("  " if t else "")
        t.append(f"{ips:.1f}")
        t.append(" img/s", style="dim")
    if wait_r is not None and isinstance(wait_r.value, (int, float)):
        t.append("  data wait " if t else "data wait ", style="dim")
        t.append(fpct(wait_r.value), style=value_style(state, wait_r, _pct_style(wait_r.value, 0.15, 0.30)))
    return t


class GpuPanel(Panel):
    DEFAULT_CSS = """
    GpuPanel #gpu-body { height: auto; }
    """

    def compose(self):
        yield Static(id="gpu-body")

    def render_state(self, state: Any, view: Any) -> None:
        gpu = sget(state, "gpu")
        devices = gpu.get("devices") if isinstance(gpu, dict) else None
        text = Text()
        if not devices:
            text.append(NO_GPU["zh" if self.lang == "zh" else "en"], style="dim")
        else:
            text.append(w("title", self.lang), style="bold")
            for dev in devices:
                text.append("\n")
                text.append_text(device_lines(dev, self.lang))
        train = training_lines(state, self.lang)
        if train is not None:
            text.append("\n\n")
            text.append_text(train)
        self.query_one("#gpu-body", Static).update(text)
