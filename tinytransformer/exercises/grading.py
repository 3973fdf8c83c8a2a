"""How an exercise is graded: the package's gradient check, then a diagnosis of what is wrong.

A learner writes a backward function with the exercise's signature: it gets the
forward's inputs and the upstream gradient ``dout``, and returns the gradient of
every floating input, in order (one array, or a tuple). Grading wraps the
exercise's forward and the learner's function in a Module and runs
``gradcheck`` on it (float64, central differences, a random upstream gradient,
shapes that cannot coincide, all from one seeded Generator). The verdict is the
gradient check's; the hint comes from comparing each wrong gradient with the
reference solution's: a known mistake of this exercise, the wrong sign, a
constant factor, a transpose, or wrong only in some elements.

A function that raises, returns None (the unsolved stub), returns too few
gradients or a wrong shape gets a "not yet" report, never a traceback.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..gradcheck import GradcheckResult, gradcheck, rel_error
from ..nn.module import Module

TOL = 1e-6      # worst relative error allowed, the package's gradient-check tolerance


@dataclass(frozen=True)
class Mistake:
    """A classic wrong answer for one gradient, and what to say when a learner makes it.
    ``wrong(*inputs, dout)`` computes that wrong gradient."""
    grad: str
    wrong: Callable
    hint: str


@dataclass(frozen=True)
class Exercise:
    """One backward to write. ``solution(*inputs, dout)`` is the reference, whose argument
    names are the signature's; ``build(rng)`` draws the inputs (float64, shapes that cannot
    coincide); ``grads`` names what the function returns, one per floating input."""
    name: str
    statement: str          # the forward math, the shapes, what to return
    forward: Callable       # forward(*inputs) -> output
    solution: Callable      # solution(*inputs, dout) -> gradient(s)
    build: Callable         # build(rng) -> inputs
    grads: tuple[str, ...]
    mistakes: tuple[Mistake, ...] = ()
    factor_hint: str = ""   # where a constant factor usually comes from in this exercise

    @property
    def function_name(self) -> str:
        return self.solution.__name__

    @property
    def arg_names(self) -> tuple[str, ...]:
        """The forward's inputs, then the upstream gradient: ("x", "W", "b", "dy")."""
        return tuple(inspect.signature(self.solution).parameters)

    def floats(self, inputs: tuple) -> list[tuple[str, np.ndarray]]:
        """(name, array) of the floating inputs: the ones with a gradient, in order."""
        return [(n, a) for n, a in zip(self.arg_names, inputs)
                if isinstance(a, np.ndarray) and a.dtype.kind == "f"]

    @property
    def signature(self) -> str:
        """e.g. "linear_backward(x, W, b, dy) -> (dx, dW, db)"."""
        out = self.grads[0] if len(self.grads) == 1 else f"({', '.join(self.grads)})"
        return f"{self.function_name}({', '.join(self.arg_names)}) -> {out}"

    def __str__(self) -> str:
        """What to write: the signature, then the statement (``print(EXERCISES["linear"])``)."""
        return f"{self.name}: write {self.signature}\n{self.statement.strip()}"

    def stub(self) -> str:
        """The source of the function to fill in: it runs, and returns None for every gradient."""
        args = ", ".join(self.arg_names)
        body = "\n    ".join(self.statement.strip().splitlines())
        return (f"def {self.function_name}({args}):\n"
                f'    """{body}\n    """\n'
                f"    {' = '.join(self.grads)} = None   # your code here\n"
                f"    return {', '.join(self.grads)}\n")


@dataclass
class CheckResult:
    """``passed`` and a readable ``report`` (also what the result prints as, in a notebook too)."""
    name: str
    passed: bool
    report: str
    gradcheck: GradcheckResult | None = None    # None when the function never produced gradients

    def __str__(self) -> str:
        return self.report

    __repr__ = __str__


class NotYet(Exception):
    """The learner's function did not produce gradients of the right count and shapes."""


class Graded(Module):
    """forward: the exercise's math; backward: the learner's function. Keeps the last upstream
    gradient and what the function returned, for the diagnosis."""

    def __init__(self, exercise: Exercise, fn: Callable):
        super().__init__()
        self.exercise, self.fn = exercise, fn
        self.dout = self.returned = None

    def forward(self, *inputs):
        self.cache = inputs
        # a copy: gradcheck nudges the inputs in place, and a forward that returns a view of
        # its input (split_heads is a reshape) would otherwise move with them
        return np.array(self.exercise.forward(*inputs), dtype=np.float64)

    def backward(self, dout):
        inputs = self._saved()
        self.dout = dout
        # copies: a learner's in-place edit (dy *= ...) must not change the check
        self.returned = validate(self.exercise, call(self.exercise, self.fn, inputs, dout), inputs)
        return self.returned


def _copy(a):
    return a.copy() if isinstance(a, np.ndarray) else a


def _shapes(exercise: Exercise, inputs, dout) -> str:
    return ", ".join(f"{n} {np.shape(a)}" if isinstance(a, np.ndarray) else f"{n} = {a!r}"
                     for n, a in zip(exercise.arg_names, [*inputs, dout]))


def call(exercise: Exercise, fn: Callable, inputs: tuple, dout):
    """fn(*inputs, dout) on copies; any exception becomes NotYet, with the shapes it was given."""
    try:
        return fn(*map(_copy, inputs), _copy(dout))
    except Exception as e:                          # the learner's bug, reported, not raised
        raise NotYet(f"{exercise.function_name} raised {type(e).__name__}: {e}\n"
                     f"  it was called with {_shapes(exercise, inputs, dout)}") from None


def validate(exercise: Exercise, returned, inputs) -> tuple:
    """The learner's gradients as a tuple of float64 arrays, one per floating input, each of its
    input's shape; anything else raises NotYet saying what came back and what was expected."""
    fname, grads = exercise.function_name, exercise.grads
    expected = grads[0] if len(grads) == 1 else f"a tuple ({', '.join(grads)})"
    if returned is None:
        raise NotYet(f"{fname} returned None: fill it in (it should return {expected})")
    got = returned if isinstance(returned, (tuple, list)) else (returned,)
    if len(got) != len(grads):
        raise NotYet(f"{fname} returned {len(got)} value(s); expected {expected}")
    out = []
    for grad, g, (xname, x) in zip(grads, got, exercise.floats(inputs)):
        if g is None:
            raise NotYet(f"{fname}: {grad} is None: compute it (an array of shape {x.shape}, "
                         f"like {xname})")
        try:
            g = np.asarray(g, dtype=np.float64)
        except (TypeError, ValueError):
            raise NotYet(f"{fname}: {grad} is a {type(g).__name__}, expected an array of shape "
                         f"{x.shape}") from None
        if g.shape != x.shape:
            flipped = " (transposed?)" if g.shape == x.shape[::-1] else ""
            raise NotYet(f"{fname}: {grad} has shape {g.shape}{flipped}, expected {x.shape} "
                         f"(the shape of {xname})")
        if not np.isfinite(g).all():
            raise NotYet(f"{fname}: {grad} contains NaN or inf")
        out.append(g)
    return tuple(out)


def diagnose(exercise: Exercise, grad: str, got: np.ndarray, want: np.ndarray,
             inputs: tuple, dout) -> str:
    """What is wrong with ``got`` compared with the reference ``want``, as a hint."""
    def close(a, b) -> bool:
        return a.shape == b.shape and bool((rel_error(a, b) < TOL).all())

    for mistake in exercise.mistakes:
        if mistake.grad == grad and close(got, np.asarray(mistake.wrong(*inputs, dout), dtype=np.float64)):
            return mistake.hint
    if not got.any():
        return "it is all zeros: did you compute it, or add into an array that you then did not return?"
    if close(got, np.asarray(dout)):
        return ("that is the upstream gradient unchanged: multiply it by the derivative of the forward "
                "(chain rule)")
    # the best factor c in got ~ c * want (least squares); want is never all zero here
    factor = float((got * want).sum() / (want * want).sum())
    if close(got, factor * want):
        if np.isclose(factor, -1.0):
            return "the sign is flipped"
        where = f": {exercise.factor_hint}" if exercise.factor_hint else ""
        return f"off by a constant factor (x {factor:.4g}){where}"
    if got.ndim >= 2 and close(got, want.swapaxes(-1, -2)):
        return "looks transposed: swap the order of the product, or transpose the other factor"
    wrong = rel_error(got, want) >= TOL
    if not wrong.all():
        return (f"right at {got.size - int(wrong.sum())} of {got.size} elements and wrong at the others: "
                f"a case is missing (a repeated index, a masked or clipped position, a broadcast)")
    return "wrong everywhere: re-derive it from the forward, one line at a time, and check the shapes"


def grade(exercise: Exercise, fn: Callable, seed: int = 0) -> CheckResult:
    """Run the gradient check of ``fn`` against the exercise's forward, and write the report."""
    fname = exercise.function_name
    if not callable(fn):
        return CheckResult(exercise.name, False, f"not yet: expected your function {fname}, "
                                                 f"got {type(fn).__name__} {fn!r}")
    rng = np.random.default_rng(seed)
    inputs = exercise.build(rng)
    # gradcheck draws the upstream gradient from its own seed: drawn here, after the inputs, so
    # that it is never a copy of an input (the same seed and shape would give dy == x)
    check_seed = int(rng.integers(2 ** 31))
    module = Graded(exercise, fn)
    try:
        result = gradcheck(module, *inputs, name=exercise.name, tol=TOL, seed=check_seed,
                           input_names=exercise.arg_names)
    except NotYet as e:
        return CheckResult(exercise.name, False, f"not yet: {e}")
    grads = ", ".join(exercise.grads)
    if result.passed:
        agree = "agrees" if len(exercise.grads) == 1 else "agree"
        return CheckResult(exercise.name, True,
                           f"{fname}: passed. {grads} {agree} with central differences "
                           f"(worst relative error {result.worst_error:.1e}, tolerance {TOL:.0e}).",
                           result)
    want = exercise.solution(*map(_copy, inputs), _copy(module.dout))
    want = want if isinstance(want, tuple) else (want,)
    wrong = [grad for grad, c in zip(exercise.grads, result.checks) if c.error >= TOL]
    lines = [f"{fname}: not yet ({', '.join(wrong)} wrong; the gradient check compares {grads} "
             f"with central differences, tolerance {TOL:.0e})."]
    for i, (grad, c) in enumerate(zip(exercise.grads, result.checks)):
        if grad not in wrong:
            lines.append(f"  {grad}: right (worst relative error {c.error:.1e})")
            continue
        where = ", ".join(str(j) for j in c.where)
        lines.append(f"  {grad}: WRONG, worst relative error {c.error:.1e} at {grad}[{where}] "
                     f"({c.checked} elements checked)")
        hint = diagnose(exercise, grad, module.returned[i], want[i], inputs, module.dout)
        lines.append(f"    hint: {hint}")
    return CheckResult(exercise.name, False, "\n".join(lines), result)
