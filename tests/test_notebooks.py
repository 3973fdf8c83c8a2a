"""The notebooks: each runs top to bottom, and each is committed executed.

Execution happens on a copy in a temporary directory (the committed notebooks are never
rewritten by the tests), with the kernel's working directory set to that copy's folder, as
when a reader opens the notebook next to its siblings, so relative paths such as a run
directory land in the temporary folder.

The kernel runs as a learner's does: its environment has no BLAS thread variable (removed
if the caller had one set), and each notebook imports NumPy before tinytransformer. The
package holds BLAS to the threads it wants where it computes (tinytransformer/threads.py),
so the notebooks run as fast as the tests of the package do.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
assert NOTEBOOKS, f"no notebooks found in {NOTEBOOK_DIR}: the tests below would silently run nothing"
CELL_TIMEOUT = 600   # seconds for one cell; the notebooks aim at well under a minute in total
THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                    "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")


def code_cells(nb) -> list:
    return [cell for cell in nb.cells if cell.cell_type == "code"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path):
    copy = tmp_path / path.name
    shutil.copy(path, copy)
    nb = nbformat.read(copy, as_version=4)
    client = NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}})
    learner_env = {k: v for k, v in os.environ.items() if k not in THREAD_VARIABLES}
    client.execute(env=learner_env)     # raises CellExecutionError, naming the cell, on any error
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
