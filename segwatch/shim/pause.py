"""Cooperative pause of a distributed run (``segwatch run --nproc``): the ranks stop at the
same step boundary, outside any collective."""
from __future__ import annotations

import os
import time


class CoopPause:
    """Methods of ``Shim`` (segwatch.shim.runtime); the state lives on the Shim."""

    def _coop_pause(self, where: str) -> None:
        """Cooperative pause (distributed runs): while the supervisor's pause file exists,
        wait here, at a step boundary, outside any collective. One ``os.stat`` when not paused.

        The ranks agree on the step to stop after (``PAUSE_FILE.target``, written once by the
        first rank that sees the pause: its step + 1). Under DDP no rank can be more than one
        backward ahead of another, so every rank reaches that step's boundary and none is left
        waiting inside a collective for a rank that stopped one step earlier."""
        try:
            os.stat(self._pause_file)
        except OSError:
            self._pause_target = None
            return
        except Exception:
            self._pause_file = None
            return
        now = time.monotonic()
        if getattr(self, "_pause_target", None) is None:
            self._pause_target = self._agree_pause_target()
            self._pause_since = (now, self.step)
        since_t, since_step = self._pause_since
        if self.step < self._pause_target and not (self.step == since_step and now - since_t > 30.0):
            return      # go on to the agreed step (unless no backward came for 30 s: stop here)
        t0 = time.perf_counter()
        try:
            if self._pending or self._losses:
                self._readback()            # the steps before the pause reach the viewer
        except Exception as exc:
            self._fail("readback", exc)
        self._emit("probe", name="pause", status="note", step=self.step,
                   message=f"rank {self.rank} paused at the {where} boundary (step {self.step})")
        try:
            while True:
                time.sleep(0.05)
                os.stat(self._pause_file)
        except OSError:
            pass
        self._pause_target = None
        self._emit("probe", name="pause", status="note", step=self.step,
                   message=f"rank {self.rank} resumed after {time.perf_counter() - t0:.1f} s")

    def _agree_pause_target(self) -> int:
        """The step every rank pauses after: read ``PAUSE_FILE.target``, or create it (atomic
        link of a complete file, so a reader never sees it half written) with step + 1."""
        tpath = self._pause_file + ".target"
        try:
            with open(tpath) as fh:
                return int(fh.read().strip())
        except (OSError, ValueError):
            pass
        want = self.step + 1
        tmp = f"{tpath}.{os.getpid()}"
        try:
            with open(tmp, "w") as fh:
                fh.write(str(want))
            try:
                os.link(tmp, tpath)
            except FileExistsError:
                pass
        except OSError:
            return want
        finally:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        try:
            with open(tpath) as fh:
                return int(fh.read().strip())
        except (OSError, ValueError):
            return want
