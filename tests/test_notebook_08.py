"""The exercises of notebook 08 that are not the package's: the reversal gap of an asymmetric ALiBi.

Its check is read from the committed notebook (the cell that defines it), so what is tested is what a
learner runs: a right answer gets "correct", the committed stub and the typical mistakes get "not yet"
with their hint, and the check never raises. (The graded exercises of notebooks 08 and 08b, rope_pairs,
alibi_asymmetric and swiglu, are tested with the others in tests/test_exercises.py.)
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import numpy as np

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"


def notebook_cells(name: str) -> list[str]:
    return [cell.source for cell in nbformat.read(NOTEBOOK_DIR / name, as_version=4).cells
            if cell.cell_type == "code"]


def reversal_gap_check() -> dict:
    """The committed stub of reversal_gap and its check, defined as the notebook defines them."""
    namespace = {"np": np}
    for source in notebook_cells("08_positions.ipynb"):
        if source.lstrip().startswith(("def reversal_gap(", "def check_reversal_gap(")):
            exec("\n".join(line for line in source.splitlines() if not line.startswith("print(")), namespace)
    return namespace


def gap(m_back, m_ahead, T):
    """bias(T-1-i, T-1-j) - bias(i, j) = (m_back - m_ahead) (i - j): a key behind before is ahead after."""
    offset = np.arange(T)[:, None] - np.arange(T)
    return (m_back - m_ahead)[:, None, None] * offset


def test_the_reversal_gap_check_passes_the_formula_and_fails_the_classic_mistakes():
    ns = reversal_gap_check()
    check = ns["check_reversal_gap"]
    assert check(gap).startswith("reversal_gap: correct")
    assert check(ns["reversal_gap"]) == "reversal_gap: not yet: it returned None (fill it in)"
    for wrong, says in ((lambda mb, ma, T: -gap(mb, ma, T), "the sign is flipped"),
                        (lambda mb, ma, T: np.abs(gap(mb, ma, T)), "changes sign with the side"),
                        (lambda mb, ma, T: np.zeros((3, T, T)), "all zeros is the answer for equal slopes"),
                        (lambda mb, ma, T: gap(mb, ma, T) + 1.0, "write both biases"),
                        (lambda mb, ma, T: gap(mb, ma, T)[0], "expected (3, 5, 5)"),
                        (lambda mb, ma, T: 1 / 0, "it raised ZeroDivisionError")):
        report = check(wrong)
        assert report.startswith("reversal_gap: not yet: ") and says in report, report


def test_the_split_puts_positions_and_the_modern_block_in_their_own_notebooks():
    positions = "\n".join(notebook_cells("08_positions.ipynb"))
    block = "\n".join(notebook_cells("08b_modern_block.ipynb"))
    assert "RotaryEmbedding" in positions and "ALiBiBias" in positions and "positions_study" in positions
    assert "RMSNorm" not in positions and "swiglu" not in positions
    assert "RMSNorm" in block and 'FeedForward(5, 7, "swiglu"' in block
    # the exercise asks for SwiGLU's backward: the notebook must not print the package's
    assert "FeedForward.backward" not in block
