"""Distributed launches: ``segwatch run --nproc N [--nnodes ...] SCRIPT``.

The child is ``python -m torch.distributed.run ... -m segwatch.shim SCRIPT ARGS``: torchrun
starts N ranks on this node, each running the script under the shim (no sitecustomize).
Every rank connects to the same supervisor socket; the ranks are torchrun's children, so
they pass the supervisor's "a process of the training's tree" check (SO_PEERCRED + psutil
parents).

Pause is cooperative for these runs (SIGSTOP of one rank makes the others' collectives time
out): the supervisor creates ``RUN_DIR/pause`` (the path is in ``SEGWATCH_PAUSE_FILE``); resume
removes it (and ``pause.target``). The ranks agree on the step to stop at through their process
group (every node's ranks, so a pause asked on one node pauses the whole job), or, without a
usable group, through the node's pause file and ``pause.target``: segwatch/shim/pause.py. Kill
still stops the whole tree; ``segwatch ctl`` on several nodes: segwatch/fleet/control.py.

No torch here (supervisor layer): torchrun is only named on a command line.
"""
from __future__ import annotations

import os
import random
import socket
import sys
from dataclasses import dataclass
from typing import Sequence

PAUSE_FILE = "pause"
PAUSE_ENV = "SEGWATCH_PAUSE_FILE"


@dataclass
class DistSpec:
    nproc: int = 1
    nnodes: int = 1
    node_rank: int = 0
    master_addr: str | None = None
    master_port: int | None = None

    @property
    def enabled(self) -> bool:
        return self.nproc > 1 or self.nnodes > 1

    @property
    def world_size(self) -> int:
        return self.nproc * self.nnodes

    def validate(self) -> None:
        if self.nproc < 1:
            raise ValueError("--nproc must be at least 1")
        if self.nnodes < 1:
            raise ValueError("--nnodes must be at least 1")
        if not 0 <= self.node_rank < self.nnodes:
            raise ValueError(f"--node-rank must be in 0..{self.nnodes - 1}")
        if self.nnodes > 1 and not self.master_addr:
            raise ValueError("--nnodes > 1 needs --master-addr (the address of node 0)")
        if self.nnodes > 1 and not self.master_port:
            raise ValueError("--nnodes > 1 needs --master-port (the same on every node)")
        if self.master_port is not None and not 0 < self.master_port < 65536:
            raise ValueError("--master-port must be in 1..65535")

    def to_dict(self) -> dict:
        return {"nproc": self.nproc, "nnodes": self.nnodes, "node_rank": self.node_rank,
                "master_addr": self.master_addr, "master_port": self.master_port}

    @classmethod
    def from_dict(cls, d: dict | None) -> "DistSpec | None":
        if not d:
            return None
        return cls(int(d.get("nproc") or 1), int(d.get("nnodes") or 1), int(d.get("node_rank") or 0),
                   d.get("master_addr"), d.get("master_port"))


def _ephemeral_range() -> tuple[int, int]:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            lo, hi = (int(x) for x in f.read().split()[:2])
        return lo, hi
    except (OSError, ValueError):
        return 32768, 60999


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now, to give as ``--master-port`` to every node of a
    multi-node run on one machine. Taken below the kernel's ephemeral range where it can: bind(0)
    and every outgoing connection draw their ports from that range, so on a busy machine a port
    from there can be taken between this check and the rendezvous binding it."""
    lo, _ = _ephemeral_range()
    rng = random.SystemRandom()
    for _ in range(50) if lo > 20000 + 1000 else ():
        port = rng.randrange(20000, lo)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def torchrun_command(spec: DistSpec, script: str, script_args: Sequence[str],
                     python: str | None = None, shim: bool = True) -> list[str]:
    """``python -m torch.distributed.run ... -m segwatch.shim SCRIPT ARGS`` (``shim=False``:
    ``... SCRIPT ARGS``, for ``--no-shim``).

    One node without ``--master-port``: torchrun's ``--standalone`` rendezvous, whose store
    binds port 0 itself (the ranks share it). A port picked here, released and bound by
    torchrun seconds later (python and torch start-up) could be taken meanwhile on a busy
    machine (EADDRINUSE, the run fails before its first step)."""
    addr = spec.master_addr or "127.0.0.1"
    if spec.nnodes == 1 and not spec.master_port:
        rendezvous = ["--standalone", "--local_addr", addr]
    else:
        rendezvous = ["--node_rank", str(spec.node_rank), "--master_addr", addr,
                      "--master_port", str(spec.master_port or free_port())]
    return [python or sys.executable, "-m", "torch.distributed.run",
            "--nproc_per_node", str(spec.nproc), "--nnodes", str(spec.nnodes), *rendezvous,
            *(["-m", "segwatch.shim"] if shim else []), script, *script_args]


def pause_path(run_dir: str | os.PathLike) -> str:
    return os.path.join(os.fspath(run_dir), PAUSE_FILE)


def set_pause(run_dir: str | os.PathLike) -> None:
    """Ask the ranks to pause. The first rank that sees the file writes ``pause.target`` (the
    step every rank stops after); a stale one from an earlier pause is removed first."""
    _unlink(pause_path(run_dir) + ".target")
    fd = os.open(pause_path(run_dir), os.O_WRONLY | os.O_CREAT, 0o600)
    os.close(fd)


def clear_pause(run_dir: str | os.PathLike) -> None:
    """Resume: the pause file first (the ranks go on and forget the target), then the target."""
    _unlink(pause_path(run_dir))
    _unlink(pause_path(run_dir) + ".target")


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
