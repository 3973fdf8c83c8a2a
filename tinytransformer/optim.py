"""Optimizers, learning-rate schedules and gradient clipping.

Legend: p a parameter, g its gradient (as the model's backward left it), t the
optimizer step (1 for the first update), lr the learning rate, wd weight decay.

An optimizer takes the Module and updates every trainable parameter
(``model.trainable_parameters()``: frozen ones are left alone) IN PLACE: tied weights (one array in several
modules, or views of it) stay tied, and are updated once. It never updates nothing in silence: a
model with no trainable parameter is refused, and a step after the model's trainable parameters
changed (``requires_grad_``, ``add_lora``, ``merge_lora``, a replaced layer, ``astype``) raises. Its state (momentum,
moments, the step count) lives here, never in the layers. Moment buffers have
the parameter's dtype, and every scalar is a Python float, so float32 training
stays float32. Each update is its formula, written per parameter. (Doing Adam's
arithmetic once over all parameters in one flat array measured 0.44 ms a step
against 0.98 ms per parameter, ~1.5% of a reference training step: not worth
hiding the formula.) A large parameter is updated block by block, 64K numbers at a time
(``in_blocks``, nn/functional.py): the same formula, the same numbers bit for bit, but
its temporaries stay in the cache (AdamW of GPT-2 small's (768, 50257) embedding: 155-235 ms
against 440-1040 ms for the formula on the whole, on a loaded 2-core AMD EPYC).

Schedules are plain functions of the step; the training loop sets the rate
before each update:

    opt.lr = warmup_inverse_sqrt(opt.step_count + 1, peak_lr=2e-3, warmup=100)
    opt.step()

Step numbering: step t is the t-th update, counting from 1; step 0 means "no
update yet" (schedules with warmup give 0.0 there).
"""

from __future__ import annotations

import functools
import math
from typing import Callable

import numpy as np

from .nn.functional import in_blocks
from .nn.module import Module

__all__ = [
    "Optimizer", "SGD", "Adam", "AdamW", "warmup_inverse_sqrt", "constant", "cosine", "SCHEDULES",
    "get_schedule", "grad_norm", "clip_grad_norm",
]

# ---- optimizers ---------------------------------------------------------------------------


class Optimizer:
    """Base class: finds the parameters, counts steps, saves and restores state.

    Subclasses name their hyperparameters in ``HYPERPARAMS``, say which per-parameter
    buffers they keep in ``_buffer_kinds`` and do the arithmetic in ``_update``, elementwise
    (it is given blocks of a large parameter, its gradient and its buffers in turn).
    """

    HYPERPARAMS: tuple[str, ...] = ("lr",)

    def __init__(self, model: Module, lr: float):
        if not isinstance(model, Module):
            raise TypeError(f"model: expected a tinytransformer Module, got {type(model).__name__}")
        _check_nonnegative("lr", lr)
        self.model = model
        self.lr = lr
        self.step_count = 0                  # number of step() calls so far: t of the last update
        trainable = self._trainable()                    # a frozen parameter is never updated
        if not trainable:
            raise ValueError(f"model: a {type(model).__name__} with no trainable parameter (all "
                             f"{len(list(model.named_parameters()))} are frozen): the optimizer would "
                             f"update nothing; unfreeze some (requires_grad_, add_lora) first")
        self.names = [name for name, _, _ in trainable]
        self._owners = [(module, key) for _, module, key in trainable]   # (module, key) of each
        self._params = [module.params[key] for module, key in self._owners]
        self._grads = [module.grads[key] for module, key in self._owners]
        self.buffers: dict[str, list[np.ndarray]] = {}   # kind -> one array per parameter
        self._ensure_buffers()

    # -- what subclasses define --

    def _buffer_kinds(self, hyperparams: dict) -> tuple[str, ...]:
        return ()

    def _update(self, hp: dict, p: np.ndarray, g: np.ndarray, *buffers: np.ndarray) -> None:
        """Update ``p`` in place from ``g``; ``buffers`` are the kinds of ``_buffer_kinds``, in order."""
        raise NotImplementedError

    # -- the step --

    def hyperparams(self) -> dict:
        """The hyperparameters as JSON-ready numbers (betas as a list)."""
        out = {}
        for name in self.HYPERPARAMS:
            value = getattr(self, name)
            out[name] = [float(v) for v in value] if isinstance(value, (tuple, list)) else float(value)
        return out

    def zero_grad(self) -> None:
        """``model.zero_grad()``: a convenience, as in PyTorch."""
        self.model.zero_grad()

    def step(self) -> None:
        """Apply one update to every trainable parameter from its current gradient; t += 1."""
        self._check_params_unchanged()
        hp = self.hyperparams()               # Python floats: float32 arrays stay float32
        self._ensure_buffers()
        self.step_count += 1
        update = functools.partial(self._update, hp)
        kinds = self._buffer_kinds(hp)
        for i, (p, g) in enumerate(zip(self._params, self._grads)):
            in_blocks(update, p, g, *(self.buffers[kind][i] for kind in kinds))

    def _ensure_buffers(self) -> None:
        """Allocate (zeros, the parameter's dtype) the buffers the hyperparameters need."""
        kinds = self._buffer_kinds(self.hyperparams())
        for kind in kinds:
            if kind not in self.buffers:
                self.buffers[kind] = [np.zeros_like(p) for p in self._params]
        for kind in list(self.buffers):
            if kind not in kinds:
                del self.buffers[kind]

    def _trainable(self) -> list[tuple[str, Module, str]]:
        """``(name, module, key)`` of every trainable parameter of the model, as the tree is now."""
        return [(name, module, key) for name, module, key in self.model.owned_parameters()
                if key not in module.frozen]

    def _check_params_unchanged(self) -> None:
        """Refuse a step once the model's trainable parameters are not the ones this optimizer
        holds: it would leave new ones untouched, or update arrays the model no longer uses.
        (Walking the tree again at every step: Adam's step of the reference model measured
        1.43 -> 1.62 ms, ~0.5% of a ~36 ms training step, on a 2-core AMD EPYC.)"""
        now = self._trainable()
        if [(module, key) for _, module, key in now] != self._owners:
            held = set(self._owners)
            added = [name for name, module, key in now if (module, key) not in held]
            kept = {(module, key) for _, module, key in now}
            gone = [name for name, owner in zip(self.names, self._owners) if owner not in kept]
            raise RuntimeError(f"the model's trainable parameters changed after the optimizer was "
                               f"built (requires_grad_, add_lora, merge_lora, a replaced layer): "
                               f"newly trainable: {_listed(added)}; no longer trainable: "
                               f"{_listed(gone)}; build the optimizer after changing them")
        for name, (module, key), p, g in zip(self.names, self._owners, self._params, self._grads):
            if module.params[key] is not p or module.grads[key] is not g:
                raise RuntimeError(f"parameter '{name}' was replaced after the optimizer was built "
                                   f"(model.astype() makes new arrays); build the optimizer after "
                                   f"casting the model")

    # -- saving --

    def state_dict(self) -> dict:
        """The state as plain numbers and arrays, for a checkpoint (.npz + JSON, no pickle).

        {"type": "Adam", "step_count": 12, "hyperparams": {"lr": ..., ...},
         "buffers": {"exp_avg": {dotted_name: ndarray}, ...}}
        Everything but "buffers" is JSON-ready; the arrays are copies.
        """
        return {
            "type": type(self).__name__,
            "step_count": int(self.step_count),
            "hyperparams": self.hyperparams(),
            "buffers": {kind: {name: b.copy() for name, b in zip(self.names, bufs)}
                        for kind, bufs in self.buffers.items()},
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore ``state_dict()`` output: step count, hyperparameters and buffers.

        Strict: the optimizer type, hyperparameter names, buffer kinds, parameter
        names and shapes must all match, else a clear error and nothing changes.
        Buffers are copied into the existing arrays (keeping the parameter dtype).
        """
        kind = type(self).__name__
        if not isinstance(state, dict) or state.get("type") != kind:
            got = state.get("type") if isinstance(state, dict) else type(state).__name__
            raise ValueError(f"load_state_dict: state is of a {got} optimizer, this is {kind}")
        hp = state.get("hyperparams", {})
        if set(hp) != set(self.HYPERPARAMS):
            raise ValueError(f"load_state_dict: {kind} hyperparams are {list(self.HYPERPARAMS)}, "
                             f"state has {sorted(hp)}")
        step_count = state.get("step_count")
        if isinstance(step_count, bool) or not isinstance(step_count, (int, np.integer)) \
                or step_count < 0:
            raise ValueError(f"load_state_dict: step_count must be an integer >= 0, got {step_count!r}")
        buffers = state.get("buffers", {})
        kinds = self._buffer_kinds(hp)
        if set(buffers) != set(kinds):
            raise ValueError(f"load_state_dict: {kind} with these hyperparameters keeps buffers "
                             f"{list(kinds)}, state has {sorted(buffers)}")
        for buf_kind, arrays in buffers.items():
            missing = sorted(set(self.names) - set(arrays))
            extra = sorted(set(arrays) - set(self.names))
            if missing or extra:
                raise KeyError(f"load_state_dict: '{buf_kind}' does not match the model's "
                               f"parameters: missing {missing or 'nothing'}, "
                               f"unexpected {extra or 'nothing'}")
            for name, p in zip(self.names, self._params):
                if np.shape(arrays[name]) != p.shape:
                    raise ValueError(f"load_state_dict: '{buf_kind}' of '{name}' has shape "
                                     f"{np.shape(arrays[name])} in the state but the parameter "
                                     f"has {p.shape}")
        for name, value in hp.items():
            setattr(self, name, tuple(value) if isinstance(value, (list, tuple)) else float(value))
        self.step_count = int(step_count)
        self._ensure_buffers()
        for buf_kind, arrays in buffers.items():
            for name, buf in zip(self.names, self.buffers[buf_kind]):
                buf[...] = arrays[name]           # in place, in the parameter's dtype

    def __repr__(self) -> str:
        hp = ", ".join(f"{k}={v}" for k, v in self.hyperparams().items())
        return f"{type(self).__name__}({hp}, step_count={self.step_count}, params={len(self.names)})"


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum and L2 weight decay (as torch.optim.SGD).

        d = g + wd * p                  (L2 penalty wd/2 |p|^2 folded into the gradient)
        b = momentum * b + d            (b starts at 0; skipped when momentum = 0, then b = d)
        p = p - lr * b
    """

    HYPERPARAMS = ("lr", "momentum", "weight_decay")

    def __init__(self, model: Module, lr: float, momentum: float = 0.0, weight_decay: float = 0.0):
        _check_nonnegative("momentum", momentum)
        _check_nonnegative("weight_decay", weight_decay)
        self.momentum = momentum
        self.weight_decay = weight_decay
        super().__init__(model, lr)

    def _buffer_kinds(self, hyperparams: dict) -> tuple[str, ...]:
        return ("momentum_buffer",) if hyperparams["momentum"] != 0 else ()

    def _update(self, hp, p, g, b=None):
        d = g + hp["weight_decay"] * p if hp["weight_decay"] else g
        if hp["momentum"]:
            b *= hp["momentum"]
            b += d                                        # b = momentum * b + d
            d = b
        p -= hp["lr"] * d


class Adam(Optimizer):
    """Adam with bias correction, exactly as torch.optim.Adam (L2 weight decay in the gradient).

        g = g + wd * p                                    (only when weight_decay > 0)
        m = beta1 * m + (1 - beta1) * g                   (m, v start at 0)
        v = beta2 * v + (1 - beta2) * g^2
        m_hat = m / (1 - beta1^t),   v_hat = v / (1 - beta2^t)
        p = p - lr * m_hat / (sqrt(v_hat) + eps)
    Computed as torch does: p -= (lr / (1 - beta1^t)) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps).
    Defaults are the paper's (beta2 = 0.98, eps = 1e-9), not torch's (0.999, 1e-8).
    """

    HYPERPARAMS = ("lr", "betas", "eps", "weight_decay")
    _decoupled = False

    def __init__(self, model: Module, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.98),
                 eps: float = 1e-9, weight_decay: float = 0.0):
        if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"betas: expected two values in [0, 1), got {betas!r}")
        _check_nonnegative("eps", eps)
        _check_nonnegative("weight_decay", weight_decay)
        self.betas = tuple(betas)
        self.eps = eps
        self.weight_decay = weight_decay
        super().__init__(model, lr)

    def _buffer_kinds(self, hyperparams: dict) -> tuple[str, ...]:
        return ("exp_avg", "exp_avg_sq")

    def _update(self, hp, p, g, m, v):
        lr, (beta1, beta2), eps, wd = hp["lr"], hp["betas"], hp["eps"], hp["weight_decay"]
        t = self.step_count
        if wd and self._decoupled:
            p *= 1.0 - lr * wd                            # AdamW: p = p - lr * wd * p
        elif wd:
            g = g + wd * p                                # Adam: g = g + wd * p
        m *= beta1
        m += (1.0 - beta1) * g                            # m = beta1 m + (1 - beta1) g
        v *= beta2
        v += (1.0 - beta2) * (g * g)                      # v = beta2 v + (1 - beta2) g^2
        # p = p - lr * m_hat / (sqrt(v_hat) + eps), with m_hat, v_hat as torch computes them
        p -= (lr / (1.0 - beta1 ** t)) * m / (np.sqrt(v) / math.sqrt(1.0 - beta2 ** t) + eps)


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter), as torch.optim.AdamW.

        p = p - lr * wd * p                               (decay the weights directly, first)
        then the Adam update of ``Adam`` with g unchanged (no wd * p in the gradient)
    """

    _decoupled = True

    def __init__(self, model: Module, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.98),
                 eps: float = 1e-9, weight_decay: float = 0.01):
        super().__init__(model, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)


def _listed(names: list[str]) -> str:
    """A few names for an error message: 'a', 'b' and 3 more; 'none' for no name."""
    if not names:
        return "none"
    return ", ".join(f"'{n}'" for n in names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def _check_nonnegative(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not value >= 0:
        raise ValueError(f"{name}: expected a number >= 0, got {value!r}")


# ---- learning-rate schedules --------------------------------------------------------------


def _check_step(step) -> None:
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
        raise ValueError(f"step: expected an integer >= 0 (1 for the first update), got {step!r}")


def warmup_inverse_sqrt(step: int, peak_lr: float, warmup: int) -> float:
    """lr = peak_lr * min(step / warmup, sqrt(warmup / step)); 0.0 at step 0.

    Linear warmup to peak_lr at step = warmup, then decay as 1/sqrt(step): the paper's
    schedule with peak_lr = d_model^-0.5 * warmup^-0.5. The reference run uses
    peak_lr = 2e-3, warmup = 100: 2e-5 at step 1, 1e-3 at 50, 2e-3 at 100, 1e-3 at 400.
    """
    _check_step(step)
    if warmup < 1:
        raise ValueError(f"warmup: expected a number of steps >= 1, got {warmup!r}")
    if step == 0:
        return 0.0
    return float(peak_lr) * min(step / warmup, math.sqrt(warmup / step))


def constant(step: int, lr: float, warmup: int = 0) -> float:
    """lr, after an optional linear warmup (lr * step / warmup while step < warmup)."""
    _check_step(step)
    if warmup < 0:
        raise ValueError(f"warmup: expected a number of steps >= 0, got {warmup!r}")
    if step < warmup:
        return float(lr) * step / warmup
    return float(lr)


def cosine(step: int, peak_lr: float, total_steps: int, warmup: int = 0,
           min_lr: float = 0.0) -> float:
    """Linear warmup to peak_lr, then half a cosine down to min_lr at total_steps.

        step <= warmup:           peak_lr * step / warmup
        warmup < step < total:    min_lr + (peak_lr - min_lr) * (1 + cos(pi * f)) / 2,
                                  f = (step - warmup) / (total_steps - warmup)
        step >= total_steps:      min_lr
    """
    _check_step(step)
    if warmup < 0 or total_steps <= warmup:
        raise ValueError(f"cosine: expected 0 <= warmup < total_steps, got warmup={warmup!r}, "
                         f"total_steps={total_steps!r}")
    if warmup and step <= warmup:
        return float(peak_lr) * step / warmup
    if step >= total_steps:
        return float(min_lr)
    f = (step - warmup) / (total_steps - warmup)
    return float(min_lr) + (float(peak_lr) - float(min_lr)) * 0.5 * (1.0 + math.cos(math.pi * f))


SCHEDULES: dict[str, Callable[..., float]] = {
    "inverse_sqrt": warmup_inverse_sqrt,
    "constant": constant,
    "cosine": cosine,
}


def get_schedule(name: str, **kwargs) -> Callable[[int], float]:
    """``step -> lr`` for a schedule in ``SCHEDULES`` with its arguments bound, checked now.

    >>> get_schedule("inverse_sqrt", peak_lr=2e-3, warmup=100)(400)
    0.001
    """
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}: known schedules are {', '.join(SCHEDULES)}")
    schedule = functools.partial(SCHEDULES[name], **kwargs)
    try:
        schedule(1)
    except TypeError as err:
        raise TypeError(f"schedule {name!r}: {err}") from None
    return schedule


# ---- gradient norm and clipping -----------------------------------------------------------


def grad_norm(model: Module) -> float:
    """Global L2 norm of the gradients, sqrt(sum over trainable params of |g|^2), tied params once."""
    total = 0.0
    for name, _, grad in model.trainable_parameters():
        flat = grad.ravel()
        with np.errstate(over="ignore", invalid="ignore"):    # overflow is handled just below
            sq = float(np.dot(flat, flat))
        if not math.isfinite(sq):
            if not np.isfinite(flat).all():
                raise FloatingPointError(f"the gradient of '{name}' is not finite "
                                         f"(nan or inf): training has diverged")
            flat = flat.astype(np.float64)        # finite but its float32 square overflowed
            sq = float(np.dot(flat, flat))
        total += sq
    return math.sqrt(total)


def clip_grad_norm(model: Module, max_norm: float) -> float:
    """Scale the trainable parameters' gradients in place so their global L2 norm is at most ``max_norm``.

        n = grad_norm(model);  if n > max_norm:  g = g * (max_norm / n)  for every g
    Returns n, the norm BEFORE clipping (log it to see how often clipping bites).
    A non-finite gradient raises FloatingPointError rather than spreading NaN.
    """
    if isinstance(max_norm, bool) or not isinstance(max_norm, (int, float, np.integer, np.floating)) \
            or not max_norm > 0:
        raise ValueError(f"max_norm: expected a number > 0, got {max_norm!r}")
    norm = grad_norm(model)
    if norm > max_norm:
        scale = float(max_norm) / norm
        for _, _, grad in model.trainable_parameters():
            grad *= scale
    return norm
