"""Numerical gradient checking: does each hand-written backward match the forward?

For a module f and a fixed random upstream gradient g (never all ones: a
wrong gradient that only sums correctly would slip through), the scalar
    L(x, theta) = sum(f(x, theta) * g)
has dL/dx = backward(g), and we compare, in float64, every element of every
floating input and of every parameter (or a seeded sample of the elements
of a large array) with its central difference:
    dL/dz ~ (L(z + eps) - L(z - eps)) / (2 eps)
with eps = 1e-5: truncation error O(eps^2) ~ 1e-10, rounding error
~ 1e-16 |L| / eps ~ 1e-11 |L|; a smaller eps trades the first for the second.

The error of one element is
    |analytic - numeric| / max(|analytic| + |numeric|, floor)
the CS231n relative error, with the denominator floored at 1e-3. Where both
are (nearly) zero, such as a key that every query masks, or the bias of the
key projection (softmax ignores a shift shared by all keys, so its gradient
is exactly zero), the rounding noise of ~1e-10 would otherwise read as a
100% error. With the floor, an element passes the 1e-6 tolerance only if it
is right to 1e-6 relative, or to 1e-9 absolute where the gradient is tiny.

ReLU has a kink at 0, where it has no derivative: if nudging an element by
+-eps moves some ReLU input across 0, the difference quotient mixes the two
slopes and is wrong by O(1). Such elements are detected (a ReLU's sign
pattern changed) and skipped, and the report counts them.

Dropout draws from a Generator; before every evaluation the state of each
Generator in the module tree is restored, so every evaluation sees the same masks.

A whole model has too many elements to check one by one; ``directional_gradcheck``
checks all of them at once along random directions u (every parameter and float
input moved together): the directional derivative (L(z + eps u) - L(z - eps u)) / (2 eps)
must equal the analytic <dL/dz, u>. A wrong gradient anywhere changes that sum.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..nn.activation import ReLU
from ..nn.module import Module
from ..threads import holds_threads

FLOOR = 1e-3
UPSTREAM_STREAM = 0x75707374   # the upstream gradient's stream: (seed, this), never plain seed


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
    checked: int         # how many elements were compared
    size: int            # how many elements the array has
    kinks: int = 0       # elements skipped because +-eps crossed a ReLU kink


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
        return bool(self.checks) and self.worst_error < self.tol and all(c.checked for c in self.checks)

    def __str__(self) -> str:
        lines = [f"{self.name}: {'PASS' if self.passed else 'FAIL'} "
                 f"(worst relative error {self.worst_error:.1e}, tolerance {self.tol:.0e})"]
        for c in self.checks:
            kinks = f", {c.kinks} skipped at ReLU kinks" if c.kinks else ""
            lines.append(f"  {c.name:<40s} {c.error:9.1e}  at {c.where}  "
                         f"({c.checked}/{c.size} elements{kinks})")
        return "\n".join(lines)


def _generators(module: Module) -> list[np.random.Generator]:
    found = {}
    for _, m in module.named_modules():
        rng = getattr(m, "rng", None)
        if isinstance(rng, np.random.Generator):
            found[id(rng)] = rng
    return list(found.values())


def _rerun(module: Module, inputs: tuple) -> Callable[[], np.ndarray]:
    """A function that runs ``module(*inputs)`` in float64, every Generator of the tree restored
    first to its state now, so that every evaluation draws the same dropout masks."""
    generators = _generators(module)
    states = [g.bit_generator.state for g in generators]

    def run() -> np.ndarray:
        for g, state in zip(generators, states):
            g.bit_generator.state = state
        # a copy: an output that is a view of an input would follow the input's nudges
        return np.array(module(*inputs), dtype=np.float64, copy=True)
    return run


def _relus(module: Module) -> list[ReLU]:
    return [m for _, m in module.named_modules() if isinstance(m, ReLU)]


def _relu_sides(relus: list[ReLU]) -> list[np.ndarray]:
    """Which side of 0 every ReLU input was on in the last forward."""
    return [m.cache.positive.copy() for m in relus if m.cache is not None]


def _same_sides(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(a, b))


def _indices(size: int, shape: tuple, max_elements: int | None, rng: np.random.Generator):
    flat = np.arange(size) if max_elements is None or size <= max_elements else \
        np.sort(rng.choice(size, max_elements, replace=False))
    return [np.unravel_index(i, shape) for i in flat]


@holds_threads
def gradcheck(module: Module, *inputs, name: str | None = None, eps: float = 1e-5,
              tol: float = 1e-6, max_elements: int | None = None, seed: int = 0,
              input_names: tuple[str, ...] | None = None) -> GradcheckResult:
    """Compare ``module.backward`` with central differences of ``module.forward(*inputs)``.

    Every floating input and every trainable parameter (``trainable_parameters``, so a
    tied weight once, with the sum of its contributions; a frozen parameter's gradient
    is zero by contract, not its derivative) is checked; integer and
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
    # a stream of its own: np.random.default_rng(seed) is where a caller's inputs usually come
    # from, and an upstream equal to the input would let a backward that uses x for dy pass
    rng = np.random.default_rng((seed, UPSTREAM_STREAM))
    run = _rerun(module, inputs)
    relus = _relus(module)          # found once: the tree does not change during the check

    upstream = rng.standard_normal(run().shape)

    module.zero_grad()
    run()
    base_sides = _relu_sides(relus)
    returned = module.backward(upstream)
    if returned is None:
        returned = ()
    elif isinstance(returned, np.ndarray):
        returned = (returned,)
    if len(returned) != len(float_inputs):
        raise ValueError(f"gradcheck: backward returned {len(returned)} gradient(s) for "
                         f"{len(float_inputs)} floating input(s)")

    targets = [(f"input {input_names[i]}", "input", inputs[i], g) for i, g in zip(float_inputs, returned)]
    targets += [(f"param {pname}", "param", p, grad.copy()) for pname, p, grad in module.trainable_parameters()]

    result = GradcheckResult(name or type(module).__name__, tol=tol)
    for label, kind, array, analytic in targets:
        if analytic.shape != array.shape:
            raise ValueError(f"gradcheck: gradient of {label} has shape {analytic.shape}, "
                             f"expected {array.shape}")
        compared, numeric, kinks = [], [], 0
        for ix in _indices(array.size, array.shape, max_elements, rng):
            original = array[ix]
            array[ix] = original + eps
            plus = run()
            plus_sides = _relu_sides(relus)
            array[ix] = original - eps
            minus = run()
            minus_sides = _relu_sides(relus)
            array[ix] = original
            if not (_same_sides(plus_sides, base_sides) and _same_sides(minus_sides, base_sides)):
                kinks += 1
                continue
            compared.append(ix)
            # L(+) - L(-) as one sum of differences: less rounding than two large sums
            numeric.append(((plus - minus) * upstream).sum() / (2 * eps))
        errors = rel_error(np.array([analytic[ix] for ix in compared]), np.array(numeric))
        worst = int(np.argmax(errors)) if compared else 0
        result.checks.append(ArrayCheck(label, kind, float(errors[worst]) if compared else 0.0,
                                        tuple(int(i) for i in compared[worst]) if compared else (),
                                        len(compared), array.size, kinks))
    run()   # leave the module's cache as it was at the unperturbed point
    return result


@holds_threads
def directional_gradcheck(module: Module, *inputs, n_directions: int = 3, eps: float = 1e-6,
                          seed: int = 0) -> float:
    """The worst relative error over ``n_directions`` random directions u through every parameter
    and every float input at once: <analytic gradient, u> against the central difference of
    L = sum(f * g) along u. Float64 only; a tied parameter moves once (named_parameters).
    u moves thousands of elements at once, so the truncation error O(eps^2 |u|^3) is larger
    than for one element: eps = 1e-6 rather than 1e-5 (on a tiny model ~1e-8 instead of ~1e-6).
    Moving everything at once moves many ReLU inputs: a direction along which one crosses
    its kink is drawn again (at most 10 * n_directions draws in all)."""
    rng = np.random.default_rng((seed, UPSTREAM_STREAM))       # not the inputs' stream (gradcheck)
    arrays = [x for x in inputs if isinstance(x, np.ndarray) and x.dtype.kind == "f"]
    arrays += [p for _, p, _ in module.named_parameters()]
    if any(a.dtype != np.float64 for a in arrays):
        raise TypeError("directional_gradcheck: every parameter and float input must be float64")
    originals = [a.copy() for a in arrays]
    run = _rerun(module, inputs)
    relus = _relus(module)

    upstream = rng.standard_normal(run().shape)      # the forward cache is of this run
    base_sides = _relu_sides(relus)
    module.zero_grad()
    returned = module.backward(upstream)
    returned = () if returned is None else (returned,) if isinstance(returned, np.ndarray) else returned
    analytic_grads = list(returned) + [g.copy() for _, _, g in module.named_parameters()]
    worst, checked = 0.0, 0
    for _ in range(10 * n_directions):
        if checked == n_directions:
            break
        directions = [rng.standard_normal(a.shape) for a in arrays]
        analytic = sum(float((g * u).sum()) for g, u in zip(analytic_grads, directions))
        for a, z, u in zip(arrays, originals, directions):
            a[...] = z + eps * u
        plus = run()
        same_sides = _same_sides(_relu_sides(relus), base_sides)
        for a, z, u in zip(arrays, originals, directions):
            a[...] = z - eps * u
        minus = run()
        same_sides &= _same_sides(_relu_sides(relus), base_sides)
        for a, z in zip(arrays, originals):
            a[...] = z
        if not same_sides:
            continue
        checked += 1
        numeric = ((plus - minus) * upstream).sum() / (2 * eps)
        worst = max(worst, float(rel_error(np.array(analytic), np.array(numeric))))
    run()
    if checked < n_directions:
        raise RuntimeError(f"directional_gradcheck: only {checked} of {10 * n_directions} directions "
                           f"kept every ReLU input on its side; use a smaller eps")
    return worst
