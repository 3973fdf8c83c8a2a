"""LoRA: a trained Linear kept frozen, plus a trainable low-rank correction (Hu et al., 2021).

Legend: N any number of leading axes (batch, time, ...), I in_features, O out_features,
r the rank (1 <= r <= min(I, O)).

Fine-tuning changes a trained weight W (I, O) by some dW. LoRA bets that the change a
new task needs has low rank, and learns it as dW = s * A @ B with A (I, r) and B (r, O):
r (I + O) numbers instead of I O (for a 64 x 64 projection and r = 4: 512 instead of
4,096). W itself stays frozen, so the optimizer keeps moments for the adapters only,
and a checkpoint needs only A and B (and a pointer to the trained model).
"""

from __future__ import annotations

from typing import Iterator, NamedTuple

import numpy as np

from .functional import column_sum, matmul_2d
from .linear import Linear, xavier_uniform
from .module import Module, check_float_input, check_upstream, default_rng, require_rng

ADAPTERS = ("lora_a", "lora_b")       # the parameter names LoRALinear adds to the base's


class LoRACache(NamedTuple):
    x: np.ndarray           # (..., I) the input
    h: np.ndarray           # (..., r) x @ A, the input projected down to the rank


class LoRALinear(Module):
    """y = x @ W + b + s * (x @ A) @ B,  s = alpha / r.

    W (I, O) and b (O,) are the base Linear's own arrays, under its names, and
    frozen; A (I, r) starts like a Linear weight (Xavier uniform) and B (r, O) at
    zero, so at first y is exactly the base's output and A @ B grows from 0.
    ``alpha=None`` means alpha = r (s = 1).

    Backward, with x flattened to (N, I), dy to (N, O) and h = x @ A (N, r):
        dB = s * h^T @ dy           dh = s * dy @ B^T           dA = x^T @ dh
        dx = dy @ W^T + dh @ A^T
        dW = x^T @ dy,  db = sum_n dy[n]       (skipped while W and b are frozen)
    """

    def __init__(self, base: Linear, rank: int, alpha: float | None = None,
                 rng: np.random.Generator | None = None):
        super().__init__()
        if not isinstance(base, Linear):
            raise TypeError(f"base: expected a Linear, got {type(base).__name__}")
        self.in_features, self.out_features = base.in_features, base.out_features
        most = min(self.in_features, self.out_features)
        if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or not 1 <= rank <= most:
            raise ValueError(f"rank: expected an integer from 1 to min(in_features, out_features) = "
                             f"{most} for a Linear({self.in_features}, {self.out_features}), got {rank!r}")
        alpha = rank if alpha is None else alpha
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.integer, np.floating)) \
                or not alpha > 0:
            raise ValueError(f"alpha: expected a number > 0 (or None for alpha = rank), got {alpha!r}")
        self.rank, self.alpha = int(rank), float(alpha)
        self.scaling = self.alpha / self.rank           # s, a Python float: float32 stays float32
        for name in base.params:                        # the base's arrays, not copies
            self.params[name], self.grads[name] = base.params[name], base.grads[name]
        self.frozen = set(base.params)
        dtype = base.params["weight"].dtype
        rng = require_rng(rng, "LoRALinear")
        self.add_param("lora_a", xavier_uniform(rng, self.in_features, self.rank, dtype))
        self.add_param("lora_b", np.zeros((self.rank, self.out_features), dtype=dtype))

    def extra_repr(self) -> str:
        return (f"{self.in_features}, {self.out_features}, rank={self.rank}, alpha={self.alpha:g}, "
                f"bias={'bias' in self.params}")

    def forward(self, x: np.ndarray) -> np.ndarray:            # x: (..., I)
        weight, lora_a, lora_b = self.params["weight"], self.params["lora_a"], self.params["lora_b"]
        check_float_input("LoRALinear input x", x, weight.dtype, last_dim=self.in_features)
        h = matmul_2d(x, lora_a)                                 # (..., r): x @ A
        self.cache = LoRACache(x, h)
        y = matmul_2d(x, weight) + matmul_2d(self.scaling * h, lora_b)   # (..., O): x @ W + s h @ B
        if "bias" in self.params:
            y += self.params["bias"]
        return y

    def backward(self, dy: np.ndarray) -> np.ndarray:            # dy: (..., O)
        x, h = self._saved()
        weight, lora_a, lora_b = self.params["weight"], self.params["lora_a"], self.params["lora_b"]
        check_upstream("LoRALinear dy", dy, x.shape[:-1] + (self.out_features,))
        x2 = x.reshape(-1, self.in_features)                     # (N, I)
        h2 = h.reshape(-1, self.rank)                            # (N, r)
        dy2 = dy.reshape(-1, self.out_features)                  # (N, O)
        # forward was y = x @ W + b + s * h @ B
        self.add_grad("weight", lambda: x2.T @ dy2)              # (I, O), not while frozen
        if "bias" in self.params:
            self.add_grad("bias", lambda: column_sum(dy2))        # (O,), not while frozen
        self.add_grad("lora_b", lambda: self.scaling * (h2.T @ dy2))   # (r, O)
        dh2 = (self.scaling * dy2) @ lora_b.T                    # (N, r)
        # forward was h = x @ A
        self.add_grad("lora_a", lambda: x2.T @ dh2)              # (I, r)
        return (dy2 @ weight.T + dh2 @ lora_a.T).reshape(x.shape)    # (..., I)

    def merged(self) -> Linear:
        """The plain Linear with W' = W + s * A @ B (a new array) and the same b: same outputs."""
        weight = self.params["weight"] + self.scaling * (self.params["lora_a"] @ self.params["lora_b"])
        linear = Linear.from_arrays(weight, self.params.get("bias"))
        linear.frozen = self.frozen & set(linear.params)
        return linear


def lora_layers(model: Module) -> Iterator[tuple[str, Module, str, LoRALinear]]:
    """``(dotted_name, parent, attribute, layer)`` of every LoRALinear of the tree."""
    for prefix, module in list(model.named_modules()):
        for attribute, value in list(vars(module).items()):
            if isinstance(value, LoRALinear):
                yield (f"{prefix}.{attribute}" if prefix else attribute), module, attribute, value


def add_lora(model: Module, rank: int, alpha: float | None = None,
             targets: tuple[str, ...] = ("w_q", "w_v"), rng: np.random.Generator | None = None) -> Module:
    """Put a LoRALinear around every Linear whose attribute name is in ``targets``, freeze every
    other parameter of ``model``, and return it (changed in place).

    The base parameters keep their names (``...w_q.weight``), so a checkpoint of the model
    without adapters still loads into it; the new ones are ``...w_q.lora_a``, ``...w_q.lora_b``.
    By default, as in the LoRA paper, the attention's query and value projections.
    """
    if next(lora_layers(model), None) is not None:
        raise ValueError("add_lora: the model already has LoRA adapters (merge_lora(model) first "
                         "to adapt the merged model again)")
    targets = (targets,) if isinstance(targets, str) else tuple(targets)
    found = [(prefix, module, attribute) for prefix, module in model.named_modules()
             for attribute, value in vars(module).items()
             if attribute in targets and isinstance(value, Linear)]
    if not found:
        raise ValueError(f"targets: expected attribute names of Linear layers of the model "
                         f"(such as 'w_q', 'w_v', 'linear1'), got {targets!r}, which name none")
    for prefix, module, attribute in found:
        weight = getattr(module, attribute).params["weight"]
        if weight.base is not None:
            raise ValueError(f"targets: {prefix}.{attribute} shares its weight with another layer "
                             f"(tied embeddings); an adapter on it would untie them when merged")
    rng = default_rng(rng)             # one Generator for every adapter: distinct A matrices
    model.requires_grad_(False)
    for _, module, attribute in found:
        setattr(module, attribute, LoRALinear(getattr(module, attribute), rank, alpha, rng))
    return model


def merge_lora(model: Module) -> Module:
    """Fold each adapter into its weight (W' = W + (alpha / r) * A @ B) and put plain Linears
    back, with the same outputs; return ``model`` (changed in place). What was frozen stays
    frozen: ``model.requires_grad_(True)`` makes all of it trainable again."""
    layers = list(lora_layers(model))
    if not layers:
        raise ValueError("merge_lora: the model has no LoRA adapters (add_lora adds them)")
    for _, parent, attribute, layer in layers:
        setattr(parent, attribute, layer.merged())
    return model


def lora_settings(model: Module) -> dict | None:
    """{"rank", "alpha", "targets", "layers"}: the adapters' rank and alpha, the attribute names
    they sit on and the dotted names of the LoRALinear layers themselves (None without adapters),
    so a checkpoint can rebuild them where they were (``add_lora`` on part of a model adapts
    that part only)."""
    layers = list(lora_layers(model))
    if not layers:
        return None
    settings = {(layer.rank, layer.alpha) for _, _, _, layer in layers}
    if len(settings) > 1:
        raise ValueError(f"the model's adapters differ in rank or alpha ({sorted(settings)}); "
                         f"only adapters added by one add_lora call can be saved")
    (rank, alpha), = settings
    targets = sorted({attribute for _, _, attribute, _ in layers})
    return {"rank": rank, "alpha": alpha, "targets": targets, "layers": [name for name, *_ in layers]}
