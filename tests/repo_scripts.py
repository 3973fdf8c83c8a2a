"""The repository's scripts (benchmarks/, docs/), imported by the tests as modules."""

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_script(path: Path, name: str):
    """The script at ``path`` imported as the module ``name``, its folder on the path while it
    imports (a benchmark imports machine.py or run.py from beside it)."""
    sys.path[:0] = [str(path.parent)]
    try:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(path.parent))
    return module
