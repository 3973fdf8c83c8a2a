"""The exercises of notebook 08: its own check functions, run here as a learner runs them.

The exercise cells are executed from the committed notebook (the stubs, then the checks), so what
is tested is what a learner runs: right solutions get "correct", the committed stubs and classic
mistakes get "not yet", and no check raises.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import numpy as np

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"


def rope_solution(x, offset, base):
    P = x.shape[-1] // 2
    theta = np.arange(offset, offset + x.shape[-2])[:, None] * base ** (-np.arange(P) / P)   # (T, P)
    x_a, x_b = x[..., :P], x[..., P:]
    return np.concatenate([x_a * np.cos(theta) - x_b * np.sin(theta),
                           x_b * np.cos(theta) + x_a * np.sin(theta)], axis=-1)


def rope_interleaved(x, offset, base):
    """The RoFormer pairing (2i, 2i+1): right by itself, not the package's rotate-half."""
    P = x.shape[-1] // 2
    theta = np.arange(offset, offset + x.shape[-2])[:, None] * base ** (-np.arange(P) / P)
    out = np.empty_like(x)
    out[..., 0::2] = x[..., 0::2] * np.cos(theta) - x[..., 1::2] * np.sin(theta)
    out[..., 1::2] = x[..., 1::2] * np.cos(theta) + x[..., 0::2] * np.sin(theta)
    return out


def rmsnorm_backward_solution(x, gamma, dy, eps):
    rstd = 1.0 / np.sqrt((x * x).mean(-1, keepdims=True) + eps)
    xhat, g = x * rstd, dy * gamma
    dx = rstd * (g - xhat * (g * xhat).mean(-1, keepdims=True))
    return dx, (dy * xhat).reshape(-1, x.shape[-1]).sum(0)


def rmsnorm_backward_as_layernorm(x, gamma, dy, eps):
    """LayerNorm's dx (with its mean(g) term) on RMSNorm's xhat: wrong."""
    dx, dgamma = rmsnorm_backward_solution(x, gamma, dy, eps)
    rstd = 1.0 / np.sqrt((x * x).mean(-1, keepdims=True) + eps)
    return dx - rstd * (dy * gamma).mean(-1, keepdims=True), dgamma


def notebook_08_checks() -> dict:
    """The exercise cells of notebook 08 run as a learner runs them (stubs, then checks)."""
    nb = nbformat.read(NOTEBOOK_DIR / "08_positions.ipynb", as_version=4)
    start = [i for i, cell in enumerate(nb.cells)
             if cell.cell_type == "markdown" and "## Exercises" in cell.source.splitlines()][0]
    namespace = {"np": np}
    for cell in nb.cells[start:]:
        if cell.cell_type == "code":
            exec(cell.source, namespace)
    return namespace


def test_notebook_08_checks_pass_correct_solutions_and_fail_wrong_ones(capsys):
    ns = notebook_08_checks()
    assert capsys.readouterr().out.count("not yet") == 2          # the committed stubs
    assert ns["check_rope"](rope_solution).startswith("rope: correct")
    assert ns["check_rmsnorm_backward"](rmsnorm_backward_solution).startswith("rmsnorm_backward: correct")
    for checker, wrong in (("check_rope", rope_interleaved), ("check_rope", lambda x, o, b: x),
                           ("check_rope", lambda x, o, b: rope_solution(x, 0, b)),
                           ("check_rmsnorm_backward", rmsnorm_backward_as_layernorm),
                           ("check_rmsnorm_backward", lambda x, g, dy, e: (dy, g)),
                           ("check_rope", lambda x, o, b: 1 / 0)):
        report = ns[checker](wrong)
        assert ": not yet: " in report, report
