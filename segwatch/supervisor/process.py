"""The child's process tree: pause, resume, terminate, measure (psutil).

The child runs in its own session, so its process group id is its pid. DataLoader workers
and other helpers are found two ways: psutil's recursive children (which sees processes
that changed their group) and the process group (which still sees workers whose parent
already died). Every signal goes to the union of both.
"""
from __future__ import annotations

import ctypes
import os
import signal
from typing import Iterable

import psutil


def set_child_subreaper() -> bool:
    """Make orphaned descendants re-parent to us (Linux), so none escapes the cleanup."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_CHILD_SUBREAPER = 36
        return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except Exception:
        return False


class ProcessTree:
    """The child process and all of its descendants."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.pgid = pid  # start_new_session=True: the child leads its own group
        self._known: dict[int, psutil.Process] = {}
        try:
            self._known[pid] = psutil.Process(pid)
        except psutil.Error:
            pass

    def members(self, scan_group: bool = True) -> list[psutil.Process]:
        """Live processes of the tree (root first), refreshing the remembered set.

        ``scan_group=False`` skips the scan of every process on the machine for members of
        the child's process group (needed only for workers whose parent already died)."""
        found: dict[int, psutil.Process] = {}
        root = self._known.get(self.pid)
        if root is not None:
            try:
                if root.is_running():
                    found[root.pid] = root
                    for c in root.children(recursive=True):
                        found.setdefault(c.pid, self._known.get(c.pid, c))
            except psutil.Error:
                pass
        # Workers whose parent died (re-parented) still carry our process group.
        for p in list(self._known.values()):
            if p.pid not in found:
                try:
                    if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                        found[p.pid] = p
                except psutil.Error:
                    pass
        root_alive = root is not None and root.pid in found
        for p in (psutil.process_iter() if scan_group or not root_alive else ()):
            if p.pid in found or p.pid == os.getpid():
                continue
            try:
                if os.getpgid(p.pid) == self.pgid:
                    found[p.pid] = p
            except (OSError, psutil.Error):
                continue
        self._known = found
        return list(found.values())

    def _signal_all(self, procs: Iterable[psutil.Process], sig: int) -> None:
        for p in procs:
            try:
                p.send_signal(sig)
            except psutil.Error:
                pass
        try:
            os.killpg(self.pgid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def send(self, sig: int) -> int:
        procs = self.members()
        self._signal_all(procs, sig)
        return len(procs)

    def pause(self) -> int:
        """SIGSTOP the whole tree. The root first, so it starts no new workers, then again
        for anything that appeared in between."""
        n = self.send(signal.SIGSTOP)
        n2 = self.send(signal.SIGSTOP)
        return max(n, n2)

    def resume(self) -> int:
        return self.send(signal.SIGCONT)

    def terminate(self, sig: int = signal.SIGTERM) -> int:
        """Send ``sig`` to the tree and SIGCONT (a stopped process acts on SIGTERM only once
        it runs again)."""
        procs = self.members()
        self._signal_all(procs, sig)
        self._signal_all(procs, signal.SIGCONT)
        return len(procs)

    def kill(self) -> int:
        procs = self.members()
        self._signal_all(procs, signal.SIGKILL)
        return len(procs)

    def alive(self) -> list[psutil.Process]:
        return [p for p in self.members() if _running(p)]

    def cleanup(self, timeout: float = 3.0, root_exited: bool = True) -> int:
        """Make sure nothing of the tree survives: SIGTERM, wait, SIGKILL. Returns how many
        processes were still there. Reaps children of ours (zombies) with psutil."""
        procs = [p for p in self.members() if _running(p)]
        if not procs:
            return 0
        self._signal_all(procs, signal.SIGTERM)
        self._signal_all(procs, signal.SIGCONT)
        _, alive = psutil.wait_procs(procs, timeout=timeout)
        if alive:
            self._signal_all(alive, signal.SIGKILL)
            psutil.wait_procs(alive, timeout=2.0)
        return len(procs)

    def sample(self, gpu: "GpuMemProbe | None" = None) -> dict:
        """CPU percent (summed over the tree, since the previous sample), RSS and GPU memory
        (bytes; null when unknown)."""
        cpu = 0.0
        rss = 0
        n = 0
        stopped = 0
        members = self.members(scan_group=False)
        for p in members:
            try:
                with p.oneshot():
                    cpu += p.cpu_percent(None)
                    rss += p.memory_info().rss
                    if p.status() == psutil.STATUS_STOPPED:
                        stopped += 1
                n += 1
            except psutil.Error:
                continue
        gpu_mem = gpu.total(p.pid for p in members) if gpu is not None else None
        return {"cpu": round(cpu, 1), "rss": rss, "procs": n, "stopped": stopped, "gpu_mem": gpu_mem}


def _running(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def exit_status(returncode: int | None) -> int | None:
    """Popen's returncode as a shell would report it: 128+N for death by signal N."""
    if returncode is None:
        return None
    if returncode < 0:
        return 128 + (-returncode)
    return returncode


class GpuMemProbe:
    """GPU memory of the tree's processes, from ``nvidia-smi`` in a background thread (so
    the supervisor's loop never waits for it). ``total(pids)`` is None when nvidia-smi is
    absent or failing, or when none of the pids holds GPU memory (a CPU run, or a container
    whose nvidia-smi shows host pids)."""

    QUERY = ["--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"]

    def __init__(self, interval: float = 5.0, exe: str | None = None) -> None:
        import shutil

        self.exe = exe or shutil.which("nvidia-smi")
        self.interval = interval
        self.latest: dict[int, int] = {}
        self.failures = 0
        self._stop = None
        self._thread = None

    def start(self) -> "GpuMemProbe":
        import threading

        if self.exe is None:
            return self
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="segwatch-gpumem", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._stop is not None:
            self._stop.set()

    def poll_once(self) -> bool:
        import subprocess

        try:
            r = subprocess.run([self.exe, *self.QUERY], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return False
        if r.returncode != 0:
            return False
        found: dict[int, int] = {}
        for line in r.stdout.splitlines():
            parts = [p.strip() for p in line.split(",")]
            if len(parts) < 2:
                continue
            try:
                found[int(parts[0])] = found.get(int(parts[0]), 0) + int(float(parts[1]) * (1 << 20))
            except ValueError:
                continue
        self.latest = found
        return True

    def _run(self) -> None:
        while not self._stop.is_set():
            if self.poll_once():
                self.failures = 0
            else:
                self.failures += 1
                if self.failures >= 3:
                    self.exe = None  # give up quietly: gpu_mem stays null
                    return
            self._stop.wait(self.interval)

    def total(self, pids: Iterable[int]) -> int | None:
        if not self.latest:
            return None
        vals = [self.latest[p] for p in pids if p in self.latest]
        return sum(vals) if vals else None
