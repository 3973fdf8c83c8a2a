"""Graded exercises: write a backward pass, and the package checks it.

Each exercise gives a forward (its ``statement``: the math and the shapes) and asks for
the function that returns the gradient of every floating input, given the inputs and
the upstream gradient (``signature``, e.g. ``linear_backward(x, W, b, dy) -> (dx, dW, db)``):

    from tinytransformer.exercises import EXERCISES, check, reference, stub
    print(stub("linear"))                  # the function to fill in, with its statement
    check("linear", linear_backward)       # passed, or which gradient is wrong, where, and a hint
    reference("linear")                    # the solution, when you want to compare

``check`` runs the package's gradient check (float64 central differences against a
random upstream gradient, on shapes that cannot coincide, seeded) on the exercise's
forward and your backward. An unfinished function (the stub returns None) or one that
raises gets a "not yet" report rather than a traceback.

Some steps worth writing by hand are not backward passes: one merge of BPE training
(``bpe_merge``), the top-p filter of sampling (``top_p``). They are in ``OUTPUT_EXERCISES``,
reached by the same ``check``, ``reference`` and ``stub``, and graded by comparing what the
function returns with the reference's on chosen and random cases (``outputs.py``).
"""

from __future__ import annotations

from typing import Callable

from .adapters import ADAPTER_EXERCISES
from .blocks import BLOCK_EXERCISES
from .grading import CheckResult, Exercise, Mistake, grade
from .layers import LAYER_EXERCISES
from .modern import MODERN_EXERCISES
from .outputs import OutputExercise
from .text import TEXT_EXERCISES

EXERCISES: dict[str, Exercise] = {ex.name: ex for ex in LAYER_EXERCISES + BLOCK_EXERCISES
                                 + ADAPTER_EXERCISES + MODERN_EXERCISES}
OUTPUT_EXERCISES: dict[str, OutputExercise] = {ex.name: ex for ex in TEXT_EXERCISES}


def _exercise(name: str) -> Exercise | OutputExercise:
    known = {**EXERCISES, **OUTPUT_EXERCISES}
    if name not in known:
        raise KeyError(f"no exercise {name!r}; the exercises are {', '.join(known)}")
    return known[name]


def check(name: str, fn: Callable, seed: int = 0) -> CheckResult:
    """Grade ``fn`` on exercise ``name``: ``result.passed`` and ``result.report`` (also what it prints)."""
    exercise = _exercise(name)
    if isinstance(exercise, OutputExercise):
        return exercise.grade(fn, seed)
    return grade(exercise, fn, seed)


def reference(name: str) -> Callable:
    """The reference solution of exercise ``name``: a function with the exercise's signature."""
    return _exercise(name).solution


def stub(name: str) -> str:
    """The source of the function to write for exercise ``name``: it runs and gets "not yet"."""
    return _exercise(name).stub()


__all__ = ["EXERCISES", "OUTPUT_EXERCISES", "check", "reference", "stub", "CheckResult", "Exercise",
           "Mistake", "OutputExercise"]
