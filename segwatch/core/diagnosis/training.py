"""Step-side rules: loss (guide section 3, problems 3-4), gradients (section 2), the
optimizer and the model's training mode (problem 4). Inputs: ``step`` / ``model`` /
``state_dict`` events."""
from __future__ import annotations

import math
from collections import deque

from .base import Rule, ffloat, finite, fint, r4
from .lossfn import LossAware

# loss.plateau: judged on the first window only (the first PLATEAU_WINDOW finite samples),
# whenever >= PLATEAU_MIN samples spanning >= PLATEAU_SPAN steps exist: fires when
# mean(last quarter) >= 0.98 * mean(first quarter) at the first check, or at two
# consecutive later checks (so that noise after a first "falling" verdict does not fire
# it). The shim may sample sparsely (a few dozen step events in a short run), hence the
# small minimum.
PLATEAU_MIN = 8
PLATEAU_SPAN = 30
PLATEAU_WINDOW = 200
PLATEAU_RATIO = 0.98
PLATEAU_MAX_RATIO = 1.25
# loss.diverging: window means of DIVERGE_W finite samples; fires when the last
# DIVERGE_RISES windows each rose by >= 2 %, the last is > 1.5x the lowest level (the lowest
# median of 3 consecutive windows: one lucky window is no level). Once DIVERGE_BASE earlier
# windows exist, instead of rising in every window: the last DIVERGE_HOLD windows all stand
# above the typical level of the earlier ones (their median over the last DIVERGE_HISTORY)
# by DIVERGE_SIGMAS times their spread (1.4826 MAD) and by DIVERGE_SCALE of the first
# window's loss, > 1.5x the lowest level, and the last is above the one DIVERGE_RISES
# before: a converged loss that wobbles (0.06 +- 30 % over a 200k-step run) makes rising
# runs of windows by chance, not that.
# Sparse samples (after the first DIVERGE_SETTLE): three consecutive rising samples above
# 3x the lowest loss and above the first loss; or one sample 100x above the lowest and
# 10x above the first loss (a blow-up).
DIVERGE_W = 10
DIVERGE_RISES = 4
DIVERGE_FACTOR = 1.5
DIVERGE_JUMP = 3.0
DIVERGE_BLOWUP = 100.0
DIVERGE_JUMPS = 3
DIVERGE_SETTLE = 5
DIVERGE_HISTORY = 50
DIVERGE_BASE = 8
DIVERGE_SIGMAS = 6.0
DIVERGE_SCALE = 0.02
DIVERGE_HOLD = 3


def _loss(ev) -> float | None:
    return ffloat(ev.get("loss"))


def _median(xs: list[float]) -> float:
    v = sorted(xs)
    n = len(v)
    return v[n // 2] if n % 2 else 0.5 * (v[n // 2 - 1] + v[n // 2])


class LossNonfinite(LossAware, Rule):
    id = "loss.nonfinite"
    events = ("step",)
    all_ranks = True   # a NaN on one rank only (its own data) is found too, naming the rank

    def check(self, state, ev):
        loss = _loss(ev)
        tot = fint(ev.get("loss_nonfinite_total")) or 0
        if (loss is None or math.isfinite(loss)) and tot <= 0:
            return None
        evidence = {
            "loss": loss, "nonfinite_total": tot, "scale": ffloat(ev.get("scale")),
            "grad_nonfinite": fint(ev.get("grad_nonfinite")),
        }
        ws = fint(ev.get("world_size")) or 1
        if ws > 1:
            rank = fint(ev.get("rank")) or 0
            old = state.findings.get(self.id)
            ranks = set((old.evidence.get("ranks") or []) if old is not None else [])
            ranks.add(rank)
            evidence.update(rank=rank, ranks=sorted(ranks), world_size=ws)
        return self.make(state, ev, evidence)


class LossPlateau(Rule):
    id = "loss.plateau"
    events = ("step",)

    def __init__(self) -> None:
        self._n = 0
        self._first_step = None
        self._prev_flat = False
        self._checks = 0
        self._done = False

    def check(self, state, ev):
        if self._done:
            return None
        loss = _loss(ev)
        if not finite(loss):
            return None
        step = fint(ev.get("step")) or 0
        if self._first_step is None:
            self._first_step = step
        self._n += 1
        if self._n > PLATEAU_WINDOW:
            self._done = True
            return None
        if self._n < PLATEAU_MIN or step - self._first_step < PLATEAU_SPAN:
            return None
        r = state.loss_ratio(last=self._n, min_samples=PLATEAU_MIN)
        # rising far above the start is loss.diverging's business, not a plateau
        flat = r is not None and PLATEAU_RATIO <= r < PLATEAU_MAX_RATIO
        first_check = self._checks == 0
        self._checks += 1
        fire = flat and (self._prev_flat or first_check)
        self._prev_flat = flat
        if not fire:
            return None
        self._done = True
        return self.make(state, ev, {
            "samples": self._n, "steps": [self._first_step, step], "ratio_last_to_first": r4(r),
            "threshold": PLATEAU_RATIO, "loss": r4(loss),
            "lr": r4(max(state.lr_groups)) if state.lr_groups else None,
        })


class LossDiverging(LossAware, Rule):
    id = "loss.diverging"
    events = ("step",)

    def __init__(self) -> None:
        self._acc = 0.0
        self._k = 0
        self._means: deque = deque(maxlen=DIVERGE_HISTORY + DIVERGE_RISES + 1)
        self._min = math.inf          # lowest level: median of 3 consecutive window means
        self._first_mean: float | None = None
        self._first: float | None = None
        self._low = math.inf          # lowest single sample
        self._prev: float | None = None
        self._jumps = 0
        self._seen = 0

    def _sparse(self, state, ev, loss: float):
        if self._first is None:
            self._first = loss
        low = self._low
        self._low = min(self._low, loss)
        prev, self._prev = self._prev, loss
        self._seen += 1
        if self._seen <= DIVERGE_SETTLE or not (low > 0 and math.isfinite(low)):
            return None   # the first few samples of a young model may jump around
        if loss > DIVERGE_JUMP * low and loss > self._first and (prev is None or loss > prev):
            self._jumps += 1
        else:
            self._jumps = 0
        blowup = loss > DIVERGE_BLOWUP * low and loss > 10 * self._first
        if self._jumps >= DIVERGE_JUMPS or blowup:
            return self.make(state, ev, {
                "loss": r4(loss), "lowest_loss": r4(low), "first_loss": r4(self._first),
                "factor": r4(loss / low), "why": "loss blew up" if blowup else "loss keeps rising",
            })
        return None

    def check(self, state, ev):
        loss = _loss(ev)
        if not finite(loss):
            return None
        f = self._sparse(state, ev, loss)
        if f is not None:
            return f
        self._acc += loss
        self._k += 1
        if self._k < DIVERGE_W:
            return None
        m = self._acc / self._k
        self._acc, self._k = 0.0, 0
        if self._first_mean is None:
            self._first_mean = m
        self._means.append(m)
        hist = list(self._means)
        self._min = min(self._min, sorted(hist[-3:])[len(hist[-3:]) // 2])
        if len(hist) <= DIVERGE_RISES:
            return None
        ms = hist[-(DIVERGE_RISES + 1):]
        if m <= DIVERGE_FACTOR * self._min or self._min < 0:
            return None
        evidence = {
            "window_means": [r4(x) for x in ms], "lowest_window_mean": r4(self._min),
            "factor": r4(m / self._min) if self._min > 0 else None, "window": DIVERGE_W,
            "why": "loss keeps rising",
        }
        base = hist[:-(DIVERGE_RISES + 1)][-DIVERGE_HISTORY:]
        if len(base) >= DIVERGE_BASE:
            # enough history to know the wobble: the last DIVERGE_HOLD windows must all stand
            # clear of it (a noisy real rise need not climb in every window)
            typical = _median(base)
            spread = 1.4826 * _median([abs(x - typical) for x in base])
            bar = typical + max(DIVERGE_SIGMAS * spread, DIVERGE_SCALE * abs(self._first_mean))
            if min(ms[-DIVERGE_HOLD:]) <= bar or ms[-1] <= ms[0]:
                return None
            evidence.update(typical=r4(typical), spread=r4(spread))
            hold = ms[-DIVERGE_HOLD:]
            if not all(hold[i + 1] > hold[i] for i in range(len(hold) - 1)):
                # a jump that stays up (a stage switch, a late collapse) is no steady climb
                evidence["why"] = "loss rose and stays high"
            return self.make(state, ev, evidence)
        rising = all(ms[i + 1] >= ms[i] * 1.02 and ms[i + 1] > ms[i] for i in range(len(ms) - 1))
        if not rising:
            return None
        return self.make(state, ev, evidence)


class GradVanishing(Rule):
    id = "grad.vanishing"
    events = ("step",)
    PERSIST = 3

    def __init__(self) -> None:
        self._run = 0
        self._first = 0

    def check(self, state, ev):
        gn = ffloat(ev.get("grad_norm"))
        if not finite(gn):
            return None
        lo = float(state.cfg("thresholds", "grad_norm_min", 1e-7))
        with_grad = fint(ev.get("with_grad"))
        if gn >= lo or with_grad == 0:  # nothing got a gradient: that is model.frozen
            self._run = 0
            return None
        step = fint(ev.get("step")) or 0
        if self._run == 0:
            self._first = step
        self._run += 1
        if self._run < self.PERSIST:
            return None
        return self.make(state, ev, {
            "grad_norm": gn, "grad_norm_min": lo, "samples": self._run, "since_step": self._first,
            "loss": _loss(ev), "with_grad": with_grad,
        })


class GradExploding(LossAware, Rule):
    id = "grad.exploding"
    events = ("step",)
    PERSIST = 2

    def __init__(self) -> None:
        self._run = 0
        self._first = 0
        self._max = 0.0

    def check(self, state, ev):
        gn = ffloat(ev.get("grad_norm"))
        if not finite(gn):
            return None
        hi = float(state.cfg("thresholds", "grad_norm_max", 1000.0))
        if gn <= hi:
            self._run, self._max = 0, 0.0
            return None
        step = fint(ev.get("step")) or 0
        if self._run == 0:
            self._first = step
        self._run += 1
        self._max = max(self._max, gn)
        if self._run < self.PERSIST:
            return None
        return self.make(state, ev, {
            "grad_norm": r4(gn), "max_grad_norm": r4(self._max), "grad_norm_max": hi,
            "samples": self._run, "since_step": self._first,
        })


class GradNonfinite(LossAware, Rule):
    """Non-finite gradients. Under AMP (``scale`` reported) a GradScaler legitimately sees
    an inf now and then while it calibrates its scale and skips that one step, so there
    it takes 3 consecutive samples; without AMP one is enough."""
    id = "grad.nonfinite"
    events = ("step",)
    AMP_PERSIST = 3

    def __init__(self) -> None:
        self._run = 0

    def check(self, state, ev):
        n = fint(ev.get("grad_nonfinite")) or 0
        gn = ffloat(ev.get("grad_norm"))
        bad = n > 0 or (gn is not None and not math.isfinite(gn))
        if not bad:
            self._run = 0
            return None
        self._run += 1
        scale = ffloat(ev.get("scale"))
        if scale is not None and self._run < self.AMP_PERSIST:
            return None
        return self.make(state, ev, {
            "params_nonfinite": n, "grad_norm": gn, "scale": scale, "samples": self._run,
            "amp": scale is not None,
        })


class OptimLrSuspicious(Rule):
    id = "optim.lr_suspicious"
    events = ("step",)
    ZERO_PERSIST = 3

    def __init__(self) -> None:
        self._zero = 0
        self._high = 0
        self._n = 0
        self._max = 0.0
        self._recent: deque = deque(maxlen=10)

    def check(self, state, ev):
        lrs = state.lr_groups if ev.get("lr") is not None else []
        if not lrs:
            return None
        self._n += 1
        top = max(lrs)
        self._max = max(self._max, top)
        self._recent.append(top)
        exp = state.cfg("train", "expected_lr")
        if any(x == 0 for x in lrs):
            self._zero += 1
        else:
            self._zero = 0
        if self._zero >= self.ZERO_PERSIST:
            return self.make(state, ev, {
                "why": "a param group has lr 0", "lr": [r4(x) for x in lrs[:8]],
                "samples": self._zero, "expected_lr": exp,
            })
        if not exp or exp <= 0:
            return None
        if top > 10 * exp:
            self._high += 1
            if self._high >= 2:
                return self.make(state, ev, {
                    "why": "lr more than 10x above expected_lr", "lr": r4(top),
                    "expected_lr": exp, "factor": r4(top / exp),
                })
        else:
            self._high = 0
        if self._n >= 10 and self._max < exp / 10:
            ramping = self._recent[-1] > self._recent[0] * 1.0001
            if not ramping:
                return self.make(state, ev, {
                    "why": "lr more than 10x below expected_lr", "lr": r4(top),
                    "max_lr_seen": r4(self._max), "expected_lr": exp, "factor": r4(exp / self._max) if self._max > 0 else None,
                })
        return None


class OptimParamsNotStepped(Rule):
    """Parameters that get gradients but that the optimizer never updates:

    * ``no_optim`` > 0 in 2 consecutive samples (gradients outside every param group);
    * ``never_stepped`` > 0 in 3 consecutive samples while the optimizer does step (the shim
      counts a parameter only when a sampled element's expected update lr * |g| is well above
      its float resolution: a conv bias before BatchNorm, whose gradient BN cancels, is not
      "not stepped");
    * backward() keeps running but *none* of the parameters the shim tracks (those of the
      model, or of the optimizer) receives a gradient (``with_grad == 0``, ``no_grad > 0``)
      in 3 consecutive samples. backward() would raise if nothing required a gradient,
      so the gradients went elsewhere: typically the optimizer was built for a model that
      was then replaced (the training loop uses a new instance).
    """
    id = "optim.params_not_stepped"
    events = ("step",)

    def __init__(self) -> None:
        self._no_optim = 0
        self._never = 0
        self._orphan = 0
        self._last_opt = None
        self._last_bwd = None

    def check(self, state, ev):
        no_optim = fint(ev.get("no_optim")) or 0
        never = fint(ev.get("never_stepped")) or 0
        opt = fint(ev.get("optimizer_steps_total"))
        bwd = fint(ev.get("backward_total"))
        wg, ng = fint(ev.get("with_grad")), fint(ev.get("no_grad"))
        self._no_optim = self._no_optim + 1 if no_optim > 0 else 0
        advancing = opt is not None and opt >= 2 and (self._last_opt is None or opt > self._last_opt)
        if opt is not None:
            self._last_opt = opt
        self._never = self._never + 1 if (never > 0 and advancing) else 0
        bwd_adv = bwd is not None and self._last_bwd is not None and bwd > self._last_bwd
        if bwd is not None:
            self._last_bwd = bwd
        self._orphan = self._orphan + 1 if (wg == 0 and ng and ng > 0 and bwd_adv) else 0
        if self._no_optim < 2 and self._never < 3 and self._orphan < 3:
            return None
        if no_optim > 0:
            why = "parameters with gradients are in no optimizer group"
        elif self._never >= 3:
            why = "parameters with gradients never change across optimizer steps"
        else:
            why = ("backward() runs but none of the tracked parameters gets a gradient: "
                   "the optimizer holds other parameters than the ones being trained")
        evidence = {
            "no_optim": no_optim, "never_stepped": never, "with_grad": wg, "no_grad": ng,
            "optimizer_steps_total": opt, "backward_total": bwd, "why": why,
        }
        if state.lr_groups:
            # the shim counts in never_stepped only gradients whose update lr * |g| must show in
            # float (shim/probes/update.py): the LR tells a reader which update that was
            evidence["lr"] = r4(max(state.lr_groups))
        return self.make(state, ev, evidence)


class OptimStepsSkipped(Rule):
    """``backward_total`` advances while ``optimizer_steps_total`` does not.

    Over the last samples (window of up to 10): >= 80 % of >= 5 backward passes had no
    optimizer step, and either there are AMP signs (scale falling, non-finite gradients
    or losses) or not a single step happened over >= 16 backward passes (gradient
    accumulation over 4-8 micro-batches still steps regularly and stays quiet)."""
    id = "optim.steps_skipped"
    events = ("step",)

    def __init__(self) -> None:
        self._win: deque = deque(maxlen=10)
        self._last_opt: int | None = None
        self._since_b: int | None = None      # backward_total when the optimizer last stepped
        self._since_n = 0

    def check(self, state, ev):
        b = fint(ev.get("backward_total"))
        o = fint(ev.get("optimizer_steps_total"))
        if b is None or o is None:
            return None
        if self._last_opt is None or o != self._last_opt:
            self._last_opt, self._since_b, self._since_n = o, b, 0
        self._since_n += 1
        loss = _loss(ev)
        self._win.append((b, o, ffloat(ev.get("scale")), fint(ev.get("grad_nonfinite")) or 0,
                          loss is not None and not math.isfinite(loss)))
        if len(self._win) < 2:
            return None
        b0, o0 = self._win[0][0], self._win[0][1]
        db, do = b - b0, o - o0
        scales = [w[2] for w in self._win if w[2] is not None]
        falling = len(scales) >= 2 and scales[-1] < scales[0]
        nonfinite = any(w[3] > 0 or w[4] for w in self._win)
        amp_case = db >= 5 and do >= 0 and db - do >= 0.8 * db and (falling or nonfinite)
        none_case = self._since_n >= 3 and b - self._since_b >= 16
        if not (amp_case or none_case):
            return None
        if none_case and not amp_case:
            db, do = b - self._since_b, 0
        return self.make(state, ev, {
            "backward_passes": db, "skipped": db - do, "optimizer_steps": do,
            "scale_first": scales[0] if scales else None, "scale_last": scales[-1] if scales else None,
            "scale_falling": falling, "grad_nonfinite": fint(ev.get("grad_nonfinite")) or 0,
            "loss_nonfinite_total": fint(ev.get("loss_nonfinite_total")) or 0,
            "backward_total": b, "optimizer_steps_total": o,
        })


class ModelEvalModeInTraining(Rule):
    """BatchNorm/Dropout-like modules in eval mode during a training backward.

    Every such module in eval mode is the forgotten ``model.train()`` after validation:
    a state, not noise, so one sample suffices (the shim may sample rarely after its
    warm-up) and it is an error. Only some of them is a warning after 2 consecutive
    samples, unless parameters go without gradient in the same steps: a backbone frozen on
    purpose with its BN kept in eval mode (mmseg's ``norm_eval``) is not a bug."""
    id = "model.eval_mode_in_training"
    events = ("step",)
    PERSIST = 2

    def __init__(self) -> None:
        self._run = 0

    def check(self, state, ev):
        n = fint(ev.get("eval_modules")) or 0
        if n <= 0:
            self._run = 0
            return None
        total = fint(ev.get("norm_modules"))
        every = total is not None and n >= total
        if not every and (fint(ev.get("no_grad")) or 0) > 0 and (fint(ev.get("with_grad")) or 0) > 0:
            self._run = 0
            return None  # part of the model frozen on purpose, its norms with it
        self._run += 1
        if self._run < self.PERSIST and not every:
            return None
        return self.make(state, ev, {
            "eval_modules": n, "norm_modules": total, "samples": self._run,
            "all": every,
        }, severity="error" if every or total is None else "warning")


class ModelPretrainedNotLoaded(Rule):
    id = "model.pretrained_not_loaded"
    events = ("state_dict",)

    def check(self, state, ev):
        total = fint(ev.get("total")) or 0
        if total <= 0:
            return None
        loaded = fint(ev.get("loaded"))
        missing = fint(ev.get("missing")) or 0
        if loaded is None:
            loaded = max(total - missing, 0)
        if loaded / total >= 0.5:
            return None
        return self.make(state, ev, {
            "module": ev.get("module"), "loaded": loaded, "total": total, "missing": missing,
            "unexpected": fint(ev.get("unexpected")) or 0, "strict": ev.get("strict"),
            "examples_missing": list(ev.get("examples_missing") or [])[:5],
        })


class ModelFrozen(Rule):
    """Most parameters never get a gradient. From the ``model`` event (element counts:
    trainable < 10 % of params) or from ``step`` events, whose ``no_grad``/``with_grad``
    count parameter *tensors*: a frozen backbone with a trainable head is > 90 % of the
    elements but only ~75-85 % of the tensors (heads hold few, large tensors), hence the
    lower tensor threshold, over 3 consecutive samples."""
    id = "model.frozen"
    events = ("step", "model")
    PERSIST = 3
    SHARE = 0.9
    TENSOR_SHARE = 0.75

    def __init__(self) -> None:
        self._run = 0

    def check(self, state, ev):
        if ev["type"] == "model":
            p, t = fint(ev.get("params")) or 0, fint(ev.get("trainable"))
            if p > 0 and t is not None and t < (1 - self.SHARE) * p:
                return self.make(state, ev, {
                    "source": "requires_grad", "params": p, "trainable": t,
                    "frozen_share": r4(1 - t / p),
                })
            return None
        no, wg = fint(ev.get("no_grad")), fint(ev.get("with_grad"))
        if no is None or not wg or no + wg <= 0:
            # with_grad == 0 while backward() ran: the gradients went to parameters the
            # optimizer does not hold (optim.params_not_stepped), not a frozen model
            self._run = 0
            return None
        share = no / (no + wg)
        if share <= self.TENSOR_SHARE:
            self._run = 0
            return None
        self._run += 1
        if self._run < self.PERSIST:
            return None
        return self.make(state, ev, {
            "source": "gradients", "no_grad": no, "with_grad": wg, "frozen_share": r4(share),
            "samples": self._run,
        })


class ConfigNumClassesMismatch(Rule):
    id = "config.num_classes_mismatch"
    events = ("model", "preds")

    def check(self, state, ev):
        want, want_from = state.configured_num_classes, "config"
        names_from = state.class_names_source
        if not want and state.class_names and names_from not in (None, "config"):
            # no segwatch config: the framework's own class list (mmseg dataset_meta, HF
            # id2label) is the dataset's class count a new user's run can be held to
            want, want_from = len(state.class_names), f"{names_from} class names"
        if not want:
            return None
        got = fint(ev.get("out_channels") if ev["type"] == "model" else ev.get("channels"))
        if not got or got == want:
            return None
        if want_from != "config" and got == 1 and want == 2:
            return None  # a binary head with one sigmoid channel (mmseg out_channels=1)
        evidence = {"out_channels": got, "num_classes": want, "site": (state.model or {}).get("site"),
                    "source": ev["type"]}
        if want_from != "config":
            evidence["num_classes_from"] = want_from
        return self.make(state, ev, evidence, phase="train" if ev["type"] == "model" else None)
