"""The repository as a reader meets it: prose that cites nothing a reader cannot open, code the
linter passes (ruff, configured in pyproject.toml, as .ci/run runs it)."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_the_package_cites_no_document_a_reader_cannot_open():
    """The design notes and the issue tracker are not in the repository: say the thing itself."""
    cites = re.compile(r"the contract|the design|issue [0-9]+", re.IGNORECASE)
    found = [f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
             for path in sorted((ROOT / "tinytransformer").rglob("*.py"))
             for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
             if cites.search(line)]
    assert not found, "\n".join(found)


@pytest.mark.skipif(shutil.which("ruff") is None,
                    reason="ruff is not installed (pip install ruff); .ci/run installs it")
def test_the_linter_passes():
    proc = subprocess.run(["ruff", "check", "--no-cache", str(ROOT)], capture_output=True, text=True,
                          cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-1000:]
