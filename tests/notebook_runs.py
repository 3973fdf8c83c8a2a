"""A notebook executed as a learner runs it: a copy in a folder of its own, a fresh kernel, and
nothing of the test process's thread settings (the kernel's environment drops every BLAS thread
variable the caller may have set; the package holds its threads itself, tinytransformer/threads.py)."""

import asyncio
import os
import shutil
from pathlib import Path

import nbformat
from nbclient import NotebookClient

CELL_TIMEOUT = 600   # seconds for one cell; the notebooks aim at well under a minute in total
THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                    "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")


def execute_notebook(path: Path, folder: Path):
    """Run a copy of the notebook in ``folder``, in a learner's environment; the executed notebook.
    Raises CellExecutionError, naming the cell, on any error."""
    copy = folder / path.name
    shutil.copy(path, copy)
    nb = nbformat.read(copy, as_version=4)
    client = NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3",
                            resources={"metadata": {"path": str(folder)}})
    learner_env = {k: v for k, v in os.environ.items() if k not in THREAD_VARIABLES}
    asyncio.run(client.async_execute(env=learner_env))    # a loop of its own, closed after, on any thread
    return nb
