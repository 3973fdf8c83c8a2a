"""Exercises graded by their outputs: a function to write whose every answer is known exactly.

Not every step worth writing by hand is a backward pass. A BPE merge step or a top-p
filter has one right answer for each input, so grading runs the learner's function and
the reference on the same cases (fixed ones that hold the tricky inputs, then random ones
drawn from a seeded Generator) and compares. The first case that differs is reported with
its input, what came back and what was expected, and a hint when the function answers as
a known mistake of the exercise does, on every case.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .grading import CheckResult

N_RANDOM = 20       # random cases per check, after the fixed ones


@dataclass(frozen=True)
class Slip:
    """A classic wrong answer (``wrong(*case)`` computes it) and what to say to whoever gives it."""
    wrong: Callable
    hint: str


@dataclass(frozen=True)
class OutputExercise:
    """One function to write. ``solution(*case)`` is the reference, whose argument names are the
    signature's; ``cases`` are fixed inputs, ``draw(rng)`` a random one; ``same(got, want)`` says
    whether an answer is right."""
    name: str
    statement: str
    solution: Callable
    cases: tuple
    draw: Callable
    same: Callable
    returns: str
    slips: tuple[Slip, ...] = ()

    @property
    def function_name(self) -> str:
        return self.solution.__name__

    @property
    def arg_names(self) -> tuple[str, ...]:
        return tuple(inspect.signature(self.solution).parameters)

    @property
    def signature(self) -> str:
        return f"{self.function_name}({', '.join(self.arg_names)}) -> {self.returns}"

    def __str__(self) -> str:
        return f"{self.name}: write {self.signature}\n{self.statement.strip()}"

    def stub(self) -> str:
        """The source of the function to fill in: it runs, and returns None."""
        body = "\n    ".join(self.statement.strip().splitlines())
        return (f"def {self.function_name}({', '.join(self.arg_names)}):\n"
                f'    """{body}\n    """\n'
                f"    return None   # your code here\n")

    def grade(self, fn: Callable, seed: int = 0) -> CheckResult:
        """Run ``fn`` and the reference on every case; the report names the first that differs."""
        fname = self.function_name
        if not callable(fn):
            return CheckResult(self.name, False, f"not yet: expected your function {fname}, "
                                                 f"got {type(fn).__name__} {fn!r}")
        rng = np.random.default_rng(seed)
        cases = list(self.cases) + [self.draw(rng) for _ in range(N_RANDOM)]
        for case in cases:
            want = self.solution(*_copies(case))
            try:
                got = fn(*_copies(case))
            except Exception as e:                      # the learner's bug, reported, not raised
                return CheckResult(self.name, False, f"not yet: {fname} raised {type(e).__name__}: {e}\n"
                                                     f"  it was called with {self._show(case)}")
            if got is None:
                return CheckResult(self.name, False, f"not yet: {fname} returned None: fill it in "
                                                     f"(it should return {self.returns})")
            if not self.same(got, want):
                hint = next((s.hint for s in self.slips if self._makes(fn, s, cases)), None)
                lines = [f"{fname}: not yet. Called with {self._show(case)}",
                         f"  it returned {got!r}", f"  expected    {want!r}"]
                if hint:
                    lines.append(f"  hint: {hint}")
                return CheckResult(self.name, False, "\n".join(lines))
        return CheckResult(self.name, True, f"{fname}: passed. The same answers as the reference on "
                                            f"{len(cases)} cases ({len(self.cases)} chosen, "
                                            f"{N_RANDOM} random).")

    def _makes(self, fn: Callable, slip: Slip, cases: list) -> bool:
        """Whether ``fn`` answers as ``slip`` on every case: then its hint names the mistake."""
        try:
            return all(self.same(fn(*_copies(case)), slip.wrong(*_copies(case))) for case in cases)
        except Exception:                               # fn fails on some other case: not this slip
            return False

    def _show(self, case) -> str:
        return ", ".join(f"{n} = {a!r}" for n, a in zip(self.arg_names, case))


def _copies(case: tuple) -> tuple:
    """Deep enough copies that a function editing its arguments cannot change the next call's."""
    def copy(a):
        if isinstance(a, np.ndarray):
            return a.copy()
        if isinstance(a, list):
            return [copy(x) for x in a]
        if isinstance(a, dict):
            return {k: copy(v) for k, v in a.items()}
        return a
    return tuple(copy(a) for a in case)
