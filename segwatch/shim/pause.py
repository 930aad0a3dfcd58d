"""Pause of a distributed run (``segwatch run --nproc``/``--nnodes``): every rank stops at the
same optimizer step boundary, outside any collective, and they resume together.

Two mechanisms, chosen once at the first optimizer step (the same on every rank):

* **Agreement over the process group** (``torch.distributed`` initialized, world size > 1,
  gloo or NCCL): every ``AGREE_EVERY`` optimizer steps (the steps with ``n % K == 0``: every
  rank picks the same ones) each rank all-reduces (MAX) a one-element int tensor on the
  default group: 1 if its node's pause file exists. The result is read at the next agreement
  step (on CUDA the value travels by a non-blocking copy, so no step waits for the GPU), and
  when it is 1 every rank pauses there, at the same optimizer step, on every node: a pause
  asked on ONE node pauses the whole job. While paused the ranks keep all-reducing the flag
  (every ``POLL_S``); they resume together when no node's pause file is left. Between
  agreement steps the cost is one integer comparison in the optimizer step hook.
* **The node's pause file only** (no process group, a single rank, another backend, or after
  an error of the agreement): the first rank that sees the file writes ``pause.target`` (its
  step + 1) and every rank of the node waits at the first boundary at or after that step.

The agreement is a collective the user's script does not know of, so every rank must make it
at the same point: it runs only in the optimizer step post-hook, at step numbers every rank
shares; an error in it (a peer gone) disables it on that rank (a ``probe`` event ``disabled``)
and the node falls back to its pause file.
"""
from __future__ import annotations

import os
import time

AGREE_EVERY = 16         # optimizer steps between agreements (a power of two); see docs/DISTRIBUTED.md
POLL_S = 0.2             # seconds between the paused ranks' agreements
HEARTBEAT_S = 30.0       # a paused rank's "still paused" note: its node's supervisor hears it
NEVER = 1 << 62


def agree_every() -> int:
    """K: ``SEGWATCH_PAUSE_EVERY`` (rounded down to a power of two, 1..1024) or AGREE_EVERY.
    Every node's supervisor passes the same environment, so every rank reads the same K."""
    try:
        k = int(os.environ.get("SEGWATCH_PAUSE_EVERY") or AGREE_EVERY)
    except ValueError:
        k = AGREE_EVERY
    k = min(max(k, 1), 1024)
    return 1 << (k.bit_length() - 1)


class _Agreement:
    """The pause flag's all-reduce on the default process group."""

    def __init__(self, dist, device) -> None:
        import torch

        self.dist = dist
        self.op = dist.ReduceOp.MAX
        self.buf = torch.zeros(1, dtype=torch.int32, device=device)
        self.cuda = self.buf.is_cuda
        self.host = self.buf
        if self.cuda:
            try:                            # pinned: the copy back does not wait for the GPU
                self.host = torch.zeros(1, dtype=torch.int32, pin_memory=True)
            except RuntimeError:            # (no failure here may differ between ranks)
                self.host = torch.zeros(1, dtype=torch.int32)
        self.event = None
        self.pending = False

    def issue(self, flag: int) -> None:
        self.buf.fill_(flag)
        self.dist.all_reduce(self.buf, op=self.op)
        if self.cuda:
            import torch

            self.host.copy_(self.buf, non_blocking=True)
            self.event = torch.cuda.Event()
            self.event.record()
        self.pending = True

    def read(self) -> int:
        """The result of the last ``issue`` (0 if none is pending)."""
        if not self.pending:
            return 0
        self.pending = False
        if self.event is not None:
            self.event.synchronize()
            self.event = None
        return int(self.host.item())


def _make_agreement(shim) -> "_Agreement | None":
    """An agreement when the default process group can carry one, else None (file mode)."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return None
    backend = str(dist.get_backend()).lower()
    if "gloo" in backend:
        return _Agreement(dist, "cpu")
    if "nccl" in backend and torch.cuda.is_available():
        dev = None
        for opt in list(shim._optims):          # the rank's own GPU: where its parameters live
            for g in opt.param_groups:
                for p in g["params"]:
                    if p.is_cuda:
                        dev = p.device
                        break
                if dev is not None:
                    break
            if dev is not None:
                break
        return _Agreement(dist, dev if dev is not None else torch.device("cuda", torch.cuda.current_device()))
    shim.note(f"pause across ranks: backend {backend!r} not used for the pause agreement; "
              "the ranks of each node agree through its pause file", "pause")
    return None


class CoopPause:
    """Methods of ``Shim`` (segwatch.shim.runtime); the state lives on the Shim."""

    def _pause_init(self) -> None:
        path = os.environ.get("SEGWATCH_PAUSE_FILE") or None
        self._pause_file = path             # file mode: checked at every boundary (None: off)
        self._pause_path = path
        self._pause_steps = 0               # optimizer steps, counted by _pause_hook alone
        self._pause_next = 1 if path else NEVER   # the step of the next check
        self._agree: "_Agreement | bool | None" = None   # None: not chosen yet; False: file mode
        self._agree_k = agree_every()
        self._agree_errors = 0

    def _pause_hook(self, optimizer, args, kwargs):
        """Optimizer step post-hook (distributed runs only), registered after the probes' own.
        Its own count, so that no probe's failure on one rank changes which steps agree."""
        n = self._pause_steps = self._pause_steps + 1
        if n >= self._pause_next:
            try:
                self._pause_check()
            except Exception as exc:      # never into the user's optimizer.step()
                self._agree_off(exc)

    def _pause_check(self) -> None:
        s = self._pause_steps
        if self._agree is None:
            try:
                self._agree = _make_agreement(self) or False
            except Exception as exc:
                self._agree = False
                self._fail("pause_agreement", exc)
            if self._agree:
                self._pause_file = None     # no file check at batch or step boundaries
                k = self._agree_k
                self._pause_next = (s // k + 1) * k
                return
        if self._agree:
            self._pause_next = s + self._agree_k
            try:
                import torch.distributed as dist

                if not dist.is_initialized():       # the script destroyed its group: done
                    self._agree_off(None)
                    return
                want = self._agree.read()
                self._agree.issue(1 if self._pause_requested() else 0)
                if want:
                    self._fleet_pause()
            except Exception as exc:
                self._agree_off(exc)
            return
        self._pause_next = s + 1
        if self._pause_file is not None:
            self._coop_pause("optimizer step")

    def _pause_requested(self) -> bool:
        try:
            os.stat(self._pause_path)
            return True
        except OSError:
            return False

    def _agree_off(self, exc: BaseException | None) -> None:
        """The agreement failed (or the group is gone): back to the node's pause file."""
        self._agree = False
        self._pause_file = self._pause_path
        self._pause_next = self._pause_steps + 1
        if exc is not None:
            self._agree_errors += 1
            self._fail("pause_agreement", exc)

    def _fleet_pause(self) -> None:
        """Every rank is here at the same optimizer step: wait while any node asks."""
        ag = self._agree
        ag.read()                               # this step's flag: the loop asks again
        t0 = time.perf_counter()
        try:
            if self._pending or self._losses:
                self._readback()            # the steps before the pause reach the viewer
        except Exception as exc:
            self._fail("readback", exc)
        own = self._pause_requested()
        self._emit("probe", name="pause", status="note", step=self.step,
                   message=f"rank {self.rank} paused at the optimizer step boundary (step {self.step}, "
                           f"optimizer step {self._pause_steps}; "
                           + ("asked on this node" if own else "asked on another node") + ")")
        beat = time.monotonic()
        while True:
            time.sleep(POLL_S)
            ag.issue(1 if self._pause_requested() else 0)
            if not ag.read():
                break
            if time.monotonic() - beat >= HEARTBEAT_S:
                beat = time.monotonic()
                self._emit("probe", name="pause", status="note", step=self.step,
                           message=f"rank {self.rank} still paused ({time.perf_counter() - t0:.0f} s)")
        self._emit("probe", name="pause", status="note", step=self.step,
                   message=f"rank {self.rank} resumed after {time.perf_counter() - t0:.1f} s")

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
