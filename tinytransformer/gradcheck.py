"""Numerical gradient checking: does each hand-written backward match the forward?

For a module f and a fixed random upstream gradient g (never all ones: a
wrong gradient that only sums correctly would slip through), the scalar
    L(x, theta) = sum(f(x, theta) * g)
has dL/dx = backward(g). Central differences estimate each element:
    dL/dz ~ (L(z + eps) - L(z - eps)) / (2 eps)
with eps = 1e-5: truncation error O(eps^2) ~ 1e-10, rounding error
~ 1e-16 |L| / eps ~ 1e-11 |L|; smaller eps trades the first for the second.
and we compare, in float64, every element of every floating input and of
every parameter (or a seeded sample of the elements of a large array).

The error of one element is
    |analytic - numeric| / max(|analytic| + |numeric|, floor)
the CS231n relative error, with the denominator floored at 1e-3. Where both
are (nearly) zero, such as a key that every query masks, or the bias of the
key projection (softmax ignores a shift shared by all keys, so its gradient
is exactly zero), the rounding noise of ~1e-10 would otherwise read as a
100% error. With the floor, an element passes the 1e-6 tolerance only if it
is right to 1e-6 relative, or to 1e-9 absolute where the gradient is tiny.

Dropout draws from a Generator; before every evaluation the state of each
Generator in the module tree is restored, so every evaluation sees the same masks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
import numpy as np

from .nn.module import Module

FLOOR = 1e-3


def rel_error(analytic: np.ndarray, numeric: np.ndarray, floor: float = FLOOR) -> np.ndarray:
    """Elementwise |a - n| / max(|a| + |n|, floor)."""
    return np.abs(analytic - numeric) / np.maximum(np.abs(analytic) + np.abs(numeric), floor)


@dataclass
class ArrayCheck:
    """The comparison for one input or parameter."""
    name: str            # "input x" / "param w_q.weight"
    kind: str            # "input" or "param"
    error: float         # worst relative error over the elements checked
    where: tuple         # index of that element
    checked: int         # how many elements were checked
    size: int            # how many elements the array has


@dataclass
class GradcheckResult:
    name: str
    checks: list[ArrayCheck] = field(default_factory=list)
    tol: float = 1e-6

    def worst(self, kind: str) -> ArrayCheck | None:
        of_kind = [c for c in self.checks if c.kind == kind]
        return max(of_kind, key=lambda c: c.error) if of_kind else None

    @property
    def worst_error(self) -> float:
        return max((c.error for c in self.checks), default=0.0)

    @property
    def passed(self) -> bool:
        return bool(self.checks) and self.worst_error < self.tol

    def __str__(self) -> str:
        lines = [f"{self.name}: {'PASS' if self.passed else 'FAIL'} "
                 f"(worst relative error {self.worst_error:.1e}, tolerance {self.tol:.0e})"]
        for c in self.checks:
            lines.append(f"  {c.name:<40s} {c.error:9.1e}  at {c.where}  "
                         f"({c.checked}/{c.size} elements)")
        return "\n".join(lines)


def _generators(module: Module) -> list[np.random.Generator]:
    found = {}
    for _, m in module.named_modules():
        rng = getattr(m, "rng", None)
        if isinstance(rng, np.random.Generator):
            found[id(rng)] = rng
    return list(found.values())


def _indices(size: int, shape: tuple, max_elements: int | None, rng: np.random.Generator):
    flat = np.arange(size) if max_elements is None or size <= max_elements else \
        np.sort(rng.choice(size, max_elements, replace=False))
    return [np.unravel_index(i, shape) for i in flat]


def gradcheck(module: Module, *inputs, name: str | None = None, eps: float = 1e-5,
              tol: float = 1e-6, max_elements: int | None = None, seed: int = 0,
              input_names: tuple[str, ...] | None = None) -> GradcheckResult:
    """Compare ``module.backward`` with central differences of ``module.forward(*inputs)``.

    Every floating input and every parameter (``named_parameters``, so a tied
    weight once, with the sum of its contributions) is checked; integer and
    boolean inputs (ids, masks) are passed through. ``max_elements`` caps the
    elements checked per array (a seeded sample); None checks them all.
    The module and its float inputs must be float64: float32 central
    differences are dominated by rounding.
    """
    for pname, p, _ in module.named_parameters():
        if p.dtype != np.float64:
            raise TypeError(f"gradcheck: parameter {pname} is {p.dtype.name}; "
                            f"call module.astype(np.float64) first")
    float_inputs = [i for i, x in enumerate(inputs) if isinstance(x, np.ndarray) and x.dtype.kind == "f"]
    for i in float_inputs:
        if inputs[i].dtype != np.float64:
            raise TypeError(f"gradcheck: input {i} is {inputs[i].dtype.name}; expected float64")
    input_names = input_names or tuple(f"{i}" for i in range(len(inputs)))
    rng = np.random.default_rng(seed)
    generators = _generators(module)
    states = [g.bit_generator.state for g in generators]

    def run() -> np.ndarray:
        for g, state in zip(generators, states):
            g.bit_generator.state = state
        return np.asarray(module(*inputs), dtype=np.float64)

    upstream = rng.standard_normal(run().shape)

    module.zero_grad()
    run()
    returned = module.backward(upstream)
    if returned is None:
        returned = ()
    elif isinstance(returned, np.ndarray):
        returned = (returned,)
    if len(returned) != len(float_inputs):
        raise ValueError(f"gradcheck: backward returned {len(returned)} gradient(s) for "
                         f"{len(float_inputs)} floating input(s)")

    targets = [(f"input {input_names[i]}", "input", inputs[i], g) for i, g in zip(float_inputs, returned)]
    targets += [(f"param {pname}", "param", p, grad.copy()) for pname, p, grad in module.named_parameters()]

    result = GradcheckResult(name or type(module).__name__, tol=tol)
    for label, kind, array, analytic in targets:
        if analytic.shape != array.shape:
            raise ValueError(f"gradcheck: gradient of {label} has shape {analytic.shape}, "
                             f"expected {array.shape}")
        idx = _indices(array.size, array.shape, max_elements, rng)
        numeric = np.empty(len(idx))
        for n, ix in enumerate(idx):
            original = array[ix]
            array[ix] = original + eps
            plus = run()
            array[ix] = original - eps
            minus = run()
            array[ix] = original
            # L(+) - L(-) as one sum of differences: less rounding than two large sums
            numeric[n] = ((plus - minus) * upstream).sum() / (2 * eps)
        errors = rel_error(np.array([analytic[ix] for ix in idx]), numeric)
        worst = int(np.argmax(errors))
        result.checks.append(ArrayCheck(label, kind, float(errors[worst]),
                                        tuple(int(i) for i in idx[worst]), len(idx), array.size))
    run()   # leave the module's cache as it was at the unperturbed point
    return result
