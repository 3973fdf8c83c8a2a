"""Shared fixtures: a seeded Generator, a gradient-check assertion that prints the table on failure,
a check that the suite leaves the repository as it found it, and the notebooks' executions, started
with the session."""

import hashlib
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from notebook_runs import execute_notebook

from tinytransformer.gradcheck import gradcheck


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def _assert_gradcheck(module, *inputs, **kwargs):
    result = gradcheck(module, *inputs, **kwargs)
    assert result.passed, f"\n{result}"
    return result


@pytest.fixture
def assert_gradcheck():
    """assert_gradcheck(module, *inputs, **gradcheck_kwargs) -> the passing GradcheckResult."""
    return _assert_gradcheck


ROOT = Path(__file__).resolve().parents[1]
# written by Python and pytest themselves, never by the code under test
CACHES = ("__pycache__", ".pytest_cache", ".egg-info")


def tree_state(root: Path) -> dict[str, str] | None:
    """Every path ``git status`` reports as changed, untracked or ignored (caches aside), mapped to
    its status and a hash of its content; None where there is no git or no repository."""
    if shutil.which("git") is None:
        return None
    proc = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--ignored",
                           "--untracked-files=all"], capture_output=True, text=True)
    if proc.returncode != 0:
        return None
    state = {}
    for line in proc.stdout.splitlines():
        status, path = line[:2], line[3:]
        if any(cache in path for cache in CACHES):
            continue
        file = root / path
        state[path] = status + (hashlib.sha256(file.read_bytes()).hexdigest() if file.is_file() else "")
    return state


@pytest.fixture(scope="session", autouse=True)
def repository_left_clean():
    """No test, notebook or benchmark run by a test may write into the repository (tmp_path is
    theirs): the paths git reports before the suite are the paths, with the contents, it reports after."""
    before = tree_state(ROOT)
    yield
    if before is None:
        return
    after = tree_state(ROOT)
    changed = sorted(path for path in set(before) | set(after) if before.get(path) != after.get(path))
    assert not changed, f"the tests wrote into the repository {ROOT}: {changed}"


def pytest_collection_modifyitems(items):
    """The notebooks' checks last, so that their executions (``notebook_executions``) have run
    beside every other test by the time they are checked."""
    items.sort(key=lambda item: getattr(item, "originalname", None) == "test_notebook_runs")


@pytest.fixture(scope="session", autouse=True)
def notebook_executions(request, tmp_path_factory):
    """{notebook: a future of its execution} for every notebook that this session's
    ``test_notebook_runs`` (tests/test_notebooks.py) checks, started when the session starts and
    executed one at a time beside the other tests (their checks come last): a kernel is a process
    of its own, a notebook's small models keep about one core busy, and the rest of the suite,
    mostly on one thread, leaves the second core of the 2-core machines it aims at to them.
    Nothing starts when no notebook test is selected; notebooks not yet started when the session
    ends are dropped."""
    selected = [item.callspec.params["path"] for item in request.session.items
                if getattr(item, "originalname", None) == "test_notebook_runs"]
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="notebook")
    try:
        yield {path: pool.submit(execute_notebook, path, tmp_path_factory.mktemp(path.stem)) for path in selected}
    finally:
        pool.shutdown(cancel_futures=True)
