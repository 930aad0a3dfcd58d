"""Finding the model: the root module called on a training batch, and the head whose output
is the logits when the root returns something else (a loss).

During discovery only, global module forward (pre-)hooks watch one forward; they are removed
as soon as the root (and the head) are known, then instance hooks on those two take over. An
evaluation pass that runs another model (an EMA copy) is discovered the same way.
"""
from __future__ import annotations

import weakref

import torch

from . import stats as S
from .common import _norm_types


class Discovery:
    """Methods of ``Shim`` (segwatch.shim.runtime); the state lives on the Shim."""

    def _start_discovery(self) -> None:
        if self._disc_handles or not self._on("discovery"):
            return
        m = torch.nn.modules.module
        self._disc_depth = 0
        self._disc_outs = []
        self._disc_steps = 0
        self._disc_handles = [
            m.register_module_forward_pre_hook(self._g_pre),
            m.register_module_forward_hook(self._g_post, with_kwargs=True, always_call=True),
        ]

    def _stop_discovery(self) -> None:
        for h in self._disc_handles:
            try:
                h.remove()
            except Exception:
                pass
        self._disc_handles = []
        self._disc_outs = []
        self._disc_depth = 0

    def _g_pre(self, module, args):
        self._disc_depth += 1
        if self._disc_depth == 1:
            self._disc_outs = []

    def _g_post(self, module, args, *rest):
        # (module, args, kwargs, output) normally; when a forward raises, torch calls the global
        # always_call hooks as (module, args, output) whatever with_kwargs said: a fixed
        # signature made torch print a warning into the user's output
        output = rest[-1] if rest else None
        kwargs = rest[0] if len(rest) == 2 and isinstance(rest[0], dict) else {}
        d = self._disc_depth
        self._disc_depth = max(0, d - 1)
        if not self._on("discovery") or not self.installed:
            return
        t0 = self._clock()
        try:
            self._inject("discovery")
            if d > 1:
                if len(self._disc_outs) < 8192:
                    t = output
                    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
                        t = output[0]
                    elif isinstance(output, dict):
                        t = S.find_logits(output, None, None)
                    if isinstance(t, torch.Tensor) and t.dim() == 4 and t.is_floating_point() and t.shape[1] >= 2:
                        # the autograd node (strong: nodes take no weak references) tells later
                        # which outputs feed which; dropped when the outermost call returns
                        self._disc_outs.append((module, tuple(t.shape), weakref.ref(t), t.grad_fn))
            elif d == 1:
                try:
                    self._consider_root(module, args, kwargs or {}, output)
                finally:
                    self._disc_outs = []
        except Exception as exc:
            self._fail("discovery", exc)
            self._stop_discovery()
        self.sampler.spend("oneoff", self._clock() - t0)

    def _consider_root(self, module, args, kwargs, output) -> None:
        if self._disc_eval:
            self._consider_eval_root(module, args, kwargs, output)
            return
        if self._forced_root is not None and module is not self._forced_root():
            return
        if module is self._root():
            return
        if self._forced_root is None and not any(True for _ in module.parameters()):
            return
        b = self._cur
        inputs = list(S.iter_tensors(list(args))) + list(S.iter_tensors(dict(kwargs)))
        B = None
        if b is not None and b.images and self._forced_root is None:
            # a tensor of the batch itself, or one made from it: same batch size and spatial
            # size (model(torch.cat([rgb, depth], 1)), imgs.cuda(), imgs.float() ...)
            for _, t in inputs:
                if t.dim() != 4 or not t.is_floating_point():
                    continue
                for _, im in b.images:
                    if t is im or (t.shape[0] == im.shape[0] and t.shape[-2:] == im.shape[-2:]):
                        B = t.shape[0]
                        break
                if B is not None:
                    break
        if B is None and (self._forced_root is not None or not self._any_batch or self._disc_steps >= 2):
            # explicit root, no DataLoader, or nothing matched over two training steps:
            # the outermost module with parameters called on an image-like tensor
            for _, t in inputs:
                if t.dim() == 4 and t.is_floating_point():
                    B = t.shape[0]
                    break
        if B is None:
            return
        nc = self.num_classes
        root_logits = S.find_logits(output, B, None)
        outs = [o for o in self._disc_outs if o[1][0] == B and o[0] is not module]
        head = None
        if nc:
            same = root_logits if root_logits is not None and root_logits.shape[1] == nc else None
            head = self._pick_head(module, [o for o in outs if o[1][1] == nc], same, output)
        if root_logits is not None and nc and root_logits.shape[1] != nc and head is not None:
            root_logits = None   # the root returns something else with 4 dims; the head matches
        if head is None:
            want = root_logits.shape[1] if root_logits is not None else None
            head = self._pick_head(module, [o for o in outs if want is None or o[1][1] == want],
                                   root_logits, output)
        if root_logits is None and head is None:
            return
        self._set_root(module, head[0] if head else None,
                       root_logits.shape[1] if root_logits is not None else head[1][1],
                       "root" if root_logits is not None else None)
        # this very forward's logits count too (the instance hooks start with the next call)
        logits = root_logits
        if logits is None and head is not None:
            logits = head[2]()
        self._disc_outs = []
        if logits is not None:
            self._on_logits(logits, self._cur)

    def _pick_head(self, root, cands, root_logits, output):
        """The prediction head among candidate outputs (module, shape, tensor ref, grad_fn), in call order.

        An auxiliary head (mmseg ``auxiliary_head``, torchvision ``aux_classifier``, HF UperNet)
        has the same output shape as the main one and is often computed last, so "the last call"
        alone picks it. From the autograd graph: an output that feeds a later candidate (a conv
        inside its head module, a map refined further) is not the end of its chain; among chain
        ends, those feeding what the root returns (its logits, else its losses); then, as a
        tie-breaker only, those not under an attribute named aux*; then the first computed (the
        frameworks compute the main head before the auxiliary one). Without graph (no grad), the
        last call, as before.
        """
        cands = cands[-16:]
        if not cands:
            return None
        if len(cands) == 1 or all(c[3] is None for c in cands):
            return cands[-1][:3]
        reach = [_ancestors([c[3]]) for c in cands]
        ends = [c for i, c in enumerate(cands)
                if c[3] is None or not any(c[3] in reach[j] for j in range(i + 1, len(cands)))]
        if root_logits is not None:
            returned = [root_logits.grad_fn]
        else:
            returned = [t.grad_fn for _, t in S.iter_tensors(_as_container(output))]
        fed = _ancestors([g for g in returned if g is not None])
        feeding = [c for c in ends if c[3] is not None and c[3] in fed]
        if feeding:
            ends = feeding
        names = {}
        try:
            names = {id(m): n for n, m in root.named_modules()}
        except Exception:
            pass
        main = [c for c in ends if not _under_aux(names.get(id(c[0]), ""))]
        if main:
            ends = main
        return ends[0][:3]

    def _consider_eval_root(self, module, args, kwargs, output) -> None:
        if module is self._root():
            # evaluation runs the training model: its hooks see it
            self._disc_eval = False
            self._stop_discovery()
            return
        if not any(True for _ in module.parameters()):
            return
        b = self._cur
        B = b.images[0][1].shape[0] if b is not None and b.images else None
        logits = S.find_logits(output, B, self.num_classes)
        if logits is None:
            return
        self._disc_eval = False
        self._stop_discovery()
        if self._eval_root_handle is not None:
            self._eval_root_handle.remove()
        self._eval_root_ref = weakref.ref(module)
        self._eval_root_handle = module.register_forward_hook(self._eval_root_post, with_kwargs=True)
        self.note(f"evaluation runs on another {type(module).__name__} than the training model "
                  "(an EMA copy?): its outputs are paired with the evaluation labels", "discovery")
        self._on_logits(logits, b, "eval_model")

    def _eval_root_post(self, module, args, kwargs, output):
        if self._eval is None or not self.installed:
            return None          # only evaluation passes are observed on this model
        return self._root_post(module, args, kwargs, output)

    def _root(self):
        return self._root_ref() if self._root_ref is not None else None

    def _set_root(self, root, head, out_channels: int, site: str | None) -> None:
        for h in self._root_handles:
            try:
                h.remove()
            except Exception:
                pass
        self._root_handles = []
        self._root_ref = weakref.ref(root)
        names = {}
        try:
            names = {id(m): n for n, m in root.named_modules()}
        except Exception:
            pass
        head_name = names.get(id(head)) if head is not None else None
        self._head_name = head_name
        self._site_name = site or head_name or "root"
        self._root_params = [(n, p) for n, p in root.named_parameters()]
        self._norm_mods = [m for m in root.modules() if isinstance(m, _norm_types())]
        self._wn_prev = None
        self._changed = None
        self._had_grad = set()
        self._norm_snapshots = 0
        self._head_ref = weakref.ref(head) if head is not None else None
        self._hook_root(root, head)
        self._stop_discovery()
        if self.num_classes is None:
            self.num_classes = int(out_channels)
        dev = None
        for _, p in self._root_params[:1]:
            dev = str(p.device)
            self._device_type = p.device.type
        if self._device_type == "cuda":
            # reading back synchronises the device: not more often than every 5 steps
            self.sampler.set_readback_min(5)
        n_params = sum(p.numel() for _, p in self._root_params)
        trainable = sum(p.numel() for _, p in self._root_params if p.requires_grad)
        self._emit("model", step=self.step, cls=type(root).__name__, params=n_params, trainable=trainable,
                   site=self._site_name, head=head_name, out_channels=int(out_channels),
                   num_classes=self.cfg_num_classes if self.cfg_num_classes is not None else self.num_classes,
                   device=dev, norm_modules=len(self._norm_mods))

    def _hook_root(self, root, head) -> None:
        for h in self._root_handles:
            try:
                h.remove()
            except Exception:
                pass
        self._root_handles = [root.register_forward_hook(self._root_post, with_kwargs=True)]
        # the head (decode head / classifier) is hooked only when the root does not return
        # the logits itself (DFormer style: the loss in training)
        self._head_hooked = False
        if head is not None and self._site_name != "root":
            self._root_handles.append(head.register_forward_hook(self._head_post))
            self._head_hooked = True
        self._batches_without_root = 0

    def watch(self, model: torch.nn.Module, num_classes: int | None = None, ignore_index: int | None = None) -> None:
        if num_classes:
            self.num_classes = int(num_classes)
            if self.cfg_num_classes is None:
                self.cfg_num_classes = int(num_classes)
        if ignore_index is not None:
            self.ignore = int(ignore_index)
            self.ignore_cfg = int(ignore_index)
        if model is self._root():
            return
        self._forced_root = weakref.ref(model)
        self._stop_discovery()
        self._start_discovery()

    def _head_post(self, module, args, output):
        self._site_out = output


def _ancestors(nodes, limit: int = 50000) -> set:
    """Autograd nodes reachable from ``nodes`` (themselves included), at most ``limit``."""
    seen = set()
    todo = [n for n in nodes if n is not None]
    while todo and len(seen) < limit:
        n = todo.pop()
        if n in seen:
            continue
        seen.add(n)
        for nxt, _ in getattr(n, "next_functions", ()):
            if nxt is not None and nxt not in seen:
                todo.append(nxt)
    return seen


def _under_aux(qualified_name: str) -> bool:
    return any(part.lower().startswith("aux") for part in qualified_name.split("."))


def _as_container(output):
    """A model output as something ``iter_tensors`` walks (HF ModelOutput: its fields)."""
    if isinstance(output, (torch.Tensor, dict, list, tuple)):
        return output
    try:
        return dict(vars(output))
    except TypeError:
        return []
