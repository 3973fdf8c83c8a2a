"""Notebook 09 (language modelling on text): its exercises are the package's, committed unsolved, and
the small model it reads is the checkpoint the repository's script writes (float32, a few MB, with
what it takes to rebuild its tokenizer)."""

from __future__ import annotations

from pathlib import Path

import nbformat
import numpy as np
import pytest

from tinytransformer import CharTokenizer, load_checkpoint
from tinytransformer.exercises import OUTPUT_EXERCISES, check, reference, stub

from repo_scripts import load_script

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "09_text.ipynb"
MODEL = ROOT / "notebooks" / "data" / "text_model.npz"


@pytest.fixture(scope="module")
def exercise_cells():
    """The code cells from the one '## Exercises' heading to the end."""
    cells = nbformat.read(NOTEBOOK, as_version=4).cells
    starts = [i for i, cell in enumerate(cells)
              if cell.cell_type == "markdown" and cell.source.startswith("## Exercises")]
    assert len(starts) == 1, f"expected one markdown cell starting '## Exercises', found {len(starts)}"
    later = [c.source for c in cells[starts[0] + 1:]
             if c.cell_type == "markdown" and "\n## " in "\n" + c.source]
    assert not later, f"a section after the exercises: {later}"
    return [cell for cell in cells[starts[0]:] if cell.cell_type == "code"]


@pytest.mark.parametrize("name", ["bpe_merge", "top_p"])
def test_each_exercise_is_the_package_stub_and_its_saved_check_says_not_yet(exercise_cells, name):
    fname = OUTPUT_EXERCISES[name].function_name
    defined = [cell for cell in exercise_cells if cell.source.lstrip().startswith(f"def {fname}(")]
    assert len(defined) == 1 and defined[0].source.strip() == stub(name).strip()
    namespace: dict = {}
    exec(defined[0].source, namespace)
    result = check(name, namespace[fname])
    assert not result.passed and result.report.startswith("not yet:")
    checking = [cell for cell in exercise_cells if cell.source.strip() == f'print(check("{name}", {fname}))']
    assert len(checking) == 1
    saved = "".join(out.get("text", "") for out in checking[0].outputs if out.output_type == "stream")
    assert saved.strip() == result.report
    assert check(name, reference(name)).passed
    assert not any("reference(" in cell.source for cell in exercise_cells)


def test_the_committed_model_is_the_script_s_small_float32_checkpoint():
    assert MODEL.stat().st_size < 4_000_000
    model, info = load_checkpoint(MODEL)
    assert info["dtype"] == "float32" and info["task"] == "text"
    extra = info["extra"]
    tokenizer = CharTokenizer(list(extra["characters"]))
    text_reference = load_script(ROOT / "benchmarks" / "text_reference.py", "text_reference_nb09")
    # a recipe saved before the recipe named its activation was trained with the exact GELU
    recipe = {"activation": "gelu", **extra["recipe"]}
    assert model.config == text_reference.model_config(tokenizer.vocab_size, recipe)
    assert info["step"] == extra["recipe"]["steps"]
    sample = "def f(x):\n    return x"
    assert tokenizer.decode(tokenizer.encode(sample)) == sample
    logits = model(np.array([tokenizer.encode(sample)]))
    assert logits.shape == (1, len(sample), tokenizer.vocab_size) and np.isfinite(logits).all()
