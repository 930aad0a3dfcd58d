"""The child's process tree: its command and environment, the launch, signals to segwatch
(Ctrl-C, SIGTERM, Ctrl-Z), stopping the tree (interrupt, then terminate, then kill),
and the psutil/NVML samples (``proc`` and ``gpu`` events).

Part of ``Supervisor`` (a room of it, see supervisor.py): the methods here share its state.
"""
from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from segwatch.protocol import make_event
from segwatch.runs import corelink

from .gpu import NvmlSampler
from .headless import PREFIX, tr
from .process import GpuMemProbe, ProcessTree, exit_status


class ChildRoom:
    """The child process tree of the ``Supervisor``."""

    def _init_child(self) -> None:
        self.child: subprocess.Popen | None = None
        self.tree: ProcessTree | None = None
        self._signals: list[int] = []
        self._old_handlers: dict[int, Any] = {}
        self._old_wakeup: int | None = None
        self._killing: str | None = None  # None | "interrupt" | "term" | "kill"
        self._kill_deadline = 0.0
        self._exited_at: float | None = None
        self._exit_fd = -1    # a pidfd of the child: readable the moment it exits (Linux 5.3+)
        self._gpu: GpuMemProbe | None = None
        self._nvml: NvmlSampler | None = None   # per-GPU sampling (gpu events); unavailable without NVML

    def _install_signals(self) -> None:
        """SIGINT/SIGTERM/SIGHUP (and, headless, SIGTSTP/SIGCONT) wake the loop through the
        wake pipe; only in the main thread unless ``install_signals`` says otherwise."""
        install = self.install_signals
        if install is None:
            install = threading.current_thread() is threading.main_thread()
        if install:
            self._old_wakeup = signal.set_wakeup_fd(self._wake_w)
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                self._old_handlers[sig] = signal.signal(sig, self._on_signal)
            if self.headless:
                # Ctrl-Z stops the training with us, `fg` resumes both
                for sig in (signal.SIGTSTP, signal.SIGCONT):
                    self._old_handlers[sig] = signal.signal(sig, self._on_signal)

    def _restore_signals(self) -> None:
        if self._old_handlers:
            for sig, h in self._old_handlers.items():
                try:
                    signal.signal(sig, h)
                except Exception:
                    pass
            try:
                signal.set_wakeup_fd(self._old_wakeup if self._old_wakeup is not None else -1)
            except Exception:
                pass

    def _child_command(self) -> list[str]:
        if self.command:
            return self.command
        if self.dist is not None:
            from .dist import torchrun_command

            return torchrun_command(self.dist, self.script, self.script_args, shim=self.use_shim)
        if self.use_shim:
            return [sys.executable, "-m", "segwatch.shim", self.script, *self.script_args]
        return [sys.executable, self.script, *self.script_args]

    def _child_env(self) -> dict:
        env = os.environ.copy()
        env.update(self.extra_env)
        env["SEGWATCH_SOCKET"] = self.socket_path or ""
        env["SEGWATCH_RUN_DIR"] = self.run_dir
        cfg = corelink.config_to_dict(self.config)
        if cfg is not None:
            env["SEGWATCH_CONFIG"] = json.dumps(cfg)
        if self.debug:
            env["SEGWATCH_DEBUG"] = "1"
        if self.dist is not None:
            from .dist import PAUSE_ENV, clear_pause, pause_path

            clear_pause(self.run_dir)
            env[PAUSE_ENV] = pause_path(self.run_dir)
        env.setdefault("PYTHONUNBUFFERED", "1")  # so printed lines (mIoU) arrive as they are printed
        # Make `python -m segwatch.shim` importable even from an uninstalled checkout.
        pkg_parent = str(Path(__file__).resolve().parents[2])
        pp = env.get("PYTHONPATH", "")
        if pkg_parent not in pp.split(os.pathsep):
            env["PYTHONPATH"] = pp + (os.pathsep if pp else "") + pkg_parent
        return env

    def _launch(self) -> None:
        self._emit(make_event("status", status="starting", pid=None, exit_code=None))
        cmd = self._child_command()
        writers = self._open_output_files()
        try:
            self.child = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=writers["stdout"] if writers else subprocess.PIPE,
                stderr=writers["stderr"] if writers else subprocess.PIPE,
                start_new_session=True,
                env=self._child_env(),
            )
        finally:
            for fd in (writers or {}).values():
                os.close(fd)
        self._watch_exit()
        self.tree = ProcessTree(self.child.pid)
        self._gpu = GpuMemProbe().start()
        self._nvml = NvmlSampler() if self._nvml is None else self._nvml
        if not writers:
            self._say(f"{PREFIX} cannot create stdout.log/stderr.log in the run directory; "
                      "the training's output goes through segwatch (it would stop if segwatch died)")
            for name, pipe in (("stdout", self.child.stdout), ("stderr", self.child.stderr)):
                fd = pipe.fileno()
                os.set_blocking(fd, False)
                self._pipes[fd] = (name, pipe)
                self._sel.register(fd, selectors.EVENT_READ, ("pipe", name))
        self.store.write_meta(child_pid=self.child.pid, status="running", command=cmd)
        self._set_status("running", pid=self.child.pid)

    def _watch_exit(self) -> None:
        """Wake the loop when the child exits, instead of finding it at the next timeout
        (up to 0.1 s after the training's end, on every run); without pidfds, the loop's
        timeout still finds it."""
        try:
            self._exit_fd = os.pidfd_open(self.child.pid)
            self._sel.register(self._exit_fd, selectors.EVENT_READ, ("exit", None))
        except (AttributeError, OSError, ValueError):
            self._close_exit_fd()

    def _close_exit_fd(self) -> None:
        """An exited child's pidfd stays readable: unregister it at once, or select spins."""
        fd, self._exit_fd = self._exit_fd, -1
        if fd < 0:
            return
        try:
            self._sel.unregister(fd)
        except (KeyError, ValueError, AttributeError):
            pass
        try:
            os.close(fd)
        except OSError:
            pass

    def _on_signal(self, signum: int, frame: Any) -> None:
        self._signals.append(signum)

    def _handle_signal(self, signum: int) -> None:
        if self._exited_at is not None:
            return
        if signum in (signal.SIGTSTP, signal.SIGCONT):
            self._job_control(signum)
            return
        name = signal.Signals(signum).name
        self._killed_by = self._killed_by or "user"
        if signum == signal.SIGINT and self._killing is None:
            self._say(f"{PREFIX} " + tr("stopping_force", self.lang, sig=name))
            self._record_action("kill", None, by="user", reason=name)
            self._killing = "interrupt"
            self._kill_deadline = time.monotonic() + self.interrupt_timeout
            if self._paused:
                self._tree_resume()
                self._paused = False
            self.tree.send(signal.SIGINT)
        elif self._killing in (None, "interrupt"):
            if self._killing is None:
                self._say(f"{PREFIX} " + tr("stopping", self.lang, sig=name))
                self._record_action("kill", None, by="user", reason=name)
            self._start_term()
        else:
            self._escalate()

    def _job_control(self, signum: int) -> None:
        if signum == signal.SIGTSTP:
            if self._killing is None and not self._paused:
                self._pause(None, by="user", quiet=True)
                self._tstp_paused = True
            self._say(f"{PREFIX} " + tr("suspended", self.lang))
            # SIGSTOP, not a re-raised SIGTSTP: the kernel discards a default-action SIGTSTP in an
            # orphaned process group (a supervisor started from a script or a CI job whose
            # parent shell is gone), and the supervisor would go on while its training is stopped
            os.kill(os.getpid(), signal.SIGSTOP)   # stops here until SIGCONT
        elif signum == signal.SIGCONT and self._tstp_paused:
            self._tstp_paused = False
            if self._paused and self._killing is None:
                self._resume(by="user")

    def _start_term(self) -> None:
        self._killing = "term"
        self._kill_deadline = time.monotonic() + self.kill_timeout
        self._paused = False
        if self.dist is not None:
            self._tree_resume()
        if self.tree is not None:
            self.tree.terminate(signal.SIGTERM)

    def _escalate(self) -> None:
        if self._killing == "interrupt":
            self._start_term()
        elif self._killing == "term":
            self._killing = "kill"
            self._kill_deadline = time.monotonic() + 3600
            if self.tree is not None:
                self.tree.kill()
        else:
            if self.tree is not None:
                self.tree.kill()
            self._kill_deadline = time.monotonic() + 3600

    def _tree_resume(self) -> None:
        if self.dist is not None:
            from .dist import clear_pause

            try:
                clear_pause(self.run_dir)
            except OSError:
                pass
        if self.tree is not None:
            self.tree.resume()   # also for a dist run: a rank stopped by anyone else goes on

    def _stop_tree(self) -> None:
        """The end: the child's whole tree must be gone, whatever happened (terminate, then
        kill after ``kill_timeout``); sets ``exit_code`` from the child's if still unset."""
        if self.child.poll() is None:
            self._killed_by = self._killed_by or ("user" if self._crash is None else "supervisor")
            try:
                self.tree.terminate(signal.SIGTERM)
                self.child.wait(timeout=self.kill_timeout)
            except subprocess.TimeoutExpired:
                self.tree.kill()
                try:
                    self.child.wait(timeout=5.0)
                except subprocess.TimeoutExpired:
                    pass
            except Exception:
                pass
        if self.exit_code is None:
            self.exit_code = exit_status(self.child.returncode)
        try:
            self.tree.cleanup(timeout=2.0)
        except Exception:
            pass

    def _sample_proc(self) -> None:
        if self.tree is None:
            return
        try:
            sample = self.tree.sample(self._gpu)
        except Exception:
            return
        self._emit(make_event("proc", **sample))
        self._sample_gpus()

    def _sample_gpus(self) -> None:
        """One ``gpu`` event per proc sample, only when NVML sees a device."""
        if self._nvml is None or not self._nvml.available or self.tree is None:
            return
        try:
            fields = self._nvml.sample(p.pid for p in self.tree.members(scan_group=False))
        except Exception:
            return
        if fields is not None:
            self._emit(make_event("gpu", step=self.state.step, **fields))
