"""The notebooks: each runs top to bottom, and each is committed executed.

The notebooks are executed by conftest.py's ``notebook_executions``, one at a time beside the
other tests from the start of the session; ``test_notebook_runs`` waits for each one's result.
Execution happens on a copy in a temporary directory (the committed notebooks are never
rewritten by the tests), with the kernel's working directory set to that copy's folder, as
when a reader opens the notebook next to its siblings, so relative paths such as a run
directory land in the temporary folder.

The kernel runs as a learner's does: its environment has no BLAS thread variable (removed
if the caller had one set), and each notebook imports NumPy before tinytransformer. The
package holds BLAS to the threads it wants where it computes (tinytransformer/threads.py),
so the notebooks run as fast as the tests of the package do.

Notebooks 01-03, 07, 08 and 08b end with graded exercises (tinytransformer.exercises): the tests below
read the committed notebooks and hold that each still ends with them, that every committed function is
the package's unsolved stub (its check, and the output saved under it, say "not yet"), and that the
reference solution of the same exercise passes. Notebooks 04-08b end with exercises (some of them
checked by the notebook itself, against the package's training, decoding, sampling, LoRA and position
code): each is committed unsolved, every check's saved output says "not yet" (tests/test_notebook_07.py
and tests/test_notebook_08.py run the notebooks' own checks on right answers and on classic mistakes).
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

from tinytransformer.exercises import EXERCISES, check, reference, stub

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
assert NOTEBOOKS, f"no notebooks found in {NOTEBOOK_DIR}: the tests below would silently run nothing"


def code_cells(nb) -> list:
    return [cell for cell in nb.cells if cell.cell_type == "code"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path, notebook_executions):
    nb = notebook_executions[path].result()      # raises the notebook's CellExecutionError, if any
    errors = [out for cell in code_cells(nb) for out in cell.outputs if out.output_type == "error"]
    assert not errors, f"{path.name}: error outputs {[e.ename for e in errors]}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_is_committed_executed(path):
    """Outputs visible without running it (on a website): every code cell ran, in order,
    without an error; figures are embedded as PNG; the package is imported, not redefined."""
    nb = nbformat.read(path, as_version=4)
    cells = code_cells(nb)
    assert cells, f"{path.name}: no code cells"
    not_run = [i for i, cell in enumerate(cells) if cell.execution_count is None]
    assert not not_run, f"{path.name}: code cells {not_run} (0-based, code cells only) were not executed"
    counts = [cell.execution_count for cell in cells]
    assert counts == sorted(counts), f"{path.name}: cells were executed out of order: {counts}"
    outputs = [out for cell in cells for out in cell.outputs]
    assert outputs, f"{path.name}: saved without outputs"
    assert not [o for o in outputs if o.output_type == "error"], f"{path.name}: saved with an error output"
    sources = "\n".join(cell.source for cell in cells)
    assert 0 <= sources.find("import numpy") < sources.find("tinytransformer"), \
        f"{path.name}: imports tinytransformer before NumPy; a learner imports NumPy first"
    assert "import tinytransformer" in sources or "from tinytransformer" in sources, \
        f"{path.name}: does not import tinytransformer"
    if "plot" in sources:
        images = [o for o in outputs if "image/png" in o.get("data", {})]
        assert images, f"{path.name}: draws figures but none is embedded as a PNG output"


# ---- the graded exercises (notebooks 01-03, 07, 08, 08b) ----------------------------------------

NOTEBOOK_EXERCISES = {             # in the order the notebook sets them
    "01_layers_and_gradients.ipynb": ("linear", "gelu", "softmax", "layernorm", "cross_entropy"),
    "02_attention.ipynb": ("attention_scores", "attention", "split_heads", "merge_heads"),
    "03_transformer.ipynb": ("embedding", "residual"),
    "07_fine_tuning.ipynb": ("lora_dropout",),
    "08_positions.ipynb": ("rope_pairs", "alibi_asymmetric"),
    "08b_modern_block.ipynb": ("swiglu",),
}
CHECK_CALL = re.compile(r'\bcheck\(\s*"(\w+)"\s*,\s*(\w+)\s*\)')


def exercises_section(nb, name: str) -> list:
    """The cells from the notebook's one "## Exercises" heading to its end."""
    starts = [i for i, cell in enumerate(nb.cells)
              if cell.cell_type == "markdown" and cell.source.startswith("## Exercises")]
    assert len(starts) == 1, f"{name}: expected one markdown cell starting '## Exercises', found {len(starts)}"
    return nb.cells[starts[0]:]


def text_output(cell) -> str:
    return "".join(out.get("text", "") for out in cell.outputs if out.output_type == "stream")


@pytest.mark.parametrize("name", NOTEBOOK_EXERCISES)
def test_notebook_ends_with_its_graded_exercises(name):
    """The exercises are the last section; its last code cell is a check; it checks each exercise,
    once, with the function of that exercise's name; no solution is shown."""
    nb = nbformat.read(NOTEBOOK_DIR / name, as_version=4)
    section = exercises_section(nb, name)
    later_sections = [c.source.splitlines()[0] for c in section[1:] if c.cell_type == "markdown"
                      and any(line.startswith("## ") for line in c.source.splitlines())]
    assert not later_sections, f"{name}: a section after the exercises: {later_sections}"
    cells = code_cells(nb)
    assert CHECK_CALL.search(cells[-1].source), \
        f"{name}: the last code cell does not call check: {cells[-1].source!r}"
    calls = [m.groups() for cell in section if cell.cell_type == "code"
             for m in CHECK_CALL.finditer(cell.source)]
    assert [exercise for exercise, _ in calls] == list(NOTEBOOK_EXERCISES[name]), \
        f"{name}: checks {calls}, expected one per exercise of {NOTEBOOK_EXERCISES[name]}"
    for exercise, fn in calls:
        assert fn == EXERCISES[exercise].function_name, f"{name}: check({exercise!r}, {fn})"
    shown = [cell.source for cell in section if cell.cell_type == "code" and "reference(" in cell.source]
    assert not shown, f"{name}: the committed notebook shows a solution: {shown}"


NOTEBOOK_EXERCISE_PAIRS = [(nb, ex) for nb, exercises in NOTEBOOK_EXERCISES.items() for ex in exercises]


@pytest.mark.parametrize("name,exercise", NOTEBOOK_EXERCISE_PAIRS,
                         ids=[f"{nb[:2]}-{ex}" for nb, ex in NOTEBOOK_EXERCISE_PAIRS])
def test_committed_exercise_is_unsolved_and_its_reference_passes(name, exercise):
    """The cell to fill in is the package's stub, as it is; run, it gets "not yet", and so does the
    output saved under its check cell; the reference solution of the same exercise passes."""
    nb = nbformat.read(NOTEBOOK_DIR / name, as_version=4)
    section = [cell for cell in exercises_section(nb, name) if cell.cell_type == "code"]
    fname = EXERCISES[exercise].function_name
    defined = [cell for cell in section if cell.source.lstrip().startswith(f"def {fname}(")]
    assert len(defined) == 1, f"{name}: {len(defined)} cells define {fname}, expected 1"
    assert defined[0].source.strip() == stub(exercise).strip(), \
        f"{name}: the cell defining {fname} is not the unsolved stub of {exercise!r}:\n{defined[0].source}"
    namespace = {}
    exec(defined[0].source, namespace)
    result = check(exercise, namespace[fname])
    assert not result.passed and result.report.startswith("not yet:"), result.report
    checking = [cell for cell in section
                if any(m.group(1) == exercise for m in CHECK_CALL.finditer(cell.source))]
    assert len(checking) == 1
    saved = text_output(checking[0]).strip()
    assert saved == result.report, \
        f"{name}: the output saved under check({exercise!r}, ...) is\n{saved}\nexpected\n{result.report}"
    solved = check(exercise, reference(exercise))
    assert solved.passed, f"\n{solved}"


# ---- the exercises at the end of notebooks 04-08b ------------------------------------------------

NOTEBOOK_OWN_EXERCISES = {         # how many checks each notebook's exercises end with
    "04_train_reverse.ipynb": 2,
    "05_decoding.ipynb": 2,
    "06_decoder_only.ipynb": 2,
    "07_fine_tuning.ipynb": 2,
    "08_positions.ipynb": 3,
    "08b_modern_block.ipynb": 1,
}


def all_output_text(cell) -> str:
    return "".join(out.get("text", "") or out.get("data", {}).get("text/plain", "") for out in cell.outputs)


@pytest.mark.parametrize("name", NOTEBOOK_OWN_EXERCISES)
def test_notebook_ends_with_its_own_exercises_unsolved(name):
    """The exercises are the last section, and every check in it was saved saying "not yet"."""
    nb = nbformat.read(NOTEBOOK_DIR / name, as_version=4)
    starts = [i for i, cell in enumerate(nb.cells)
              if cell.cell_type == "markdown" and "## Exercises" in cell.source.splitlines()]
    assert len(starts) == 1, f"{name}: expected one '## Exercises' heading, found {len(starts)}"
    section = nb.cells[starts[0]:]
    first = section[0].source.splitlines()
    later_lines = first[first.index("## Exercises") + 1:] + [
        line for cell in section[1:] if cell.cell_type == "markdown" for line in cell.source.splitlines()]
    later_sections = [line for line in later_lines if line.startswith("## ")]
    assert not later_sections, f"{name}: a section after the exercises: {later_sections}"
    saved = [all_output_text(cell) for cell in section if cell.cell_type == "code"]
    not_yet = [text for text in saved if "not yet" in text]
    assert len(not_yet) == NOTEBOOK_OWN_EXERCISES[name], \
        f"{name}: {len(not_yet)} check outputs say 'not yet', expected {NOTEBOOK_OWN_EXERCISES[name]}"
    solved = [text for text in saved if re.search(r": correct\b", text)]
    assert not solved, f"{name}: committed with a solved exercise: {solved}"
