"""The exercise of notebook 07 that is not the package's: its own check of lora_parameters, run here on a
right answer and on typical mistakes.

The check is read from the committed notebook (the cells that define it), so what is tested is what a
learner runs: a right answer gets "correct", the committed stub and typical mistakes get "not yet", and
no check raises. (Its graded exercise, lora_dropout, is tested with the others in tests/test_exercises.py.)
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "07_fine_tuning.ipynb"


@pytest.fixture(scope="module")
def notebook():
    """The namespace of the notebook's imports, its exercise stubs and its check functions."""
    cells = [cell.source for cell in nbformat.read(NOTEBOOK, as_version=4).cells if cell.cell_type == "code"]
    namespace: dict = {}
    imports = "\n".join(line for line in cells[0].splitlines() if not line.startswith("%"))
    exec(imports, namespace)
    for source in cells:
        if source.lstrip().startswith(("def lora_parameters(", "def check_lora_parameters(")):
            body = "\n".join(line for line in source.splitlines() if not line.startswith("print("))
            exec(body, namespace)
    return namespace


def lora_parameters(model_config, rank, targets):
    d, d_ff = model_config.d_model, model_config.d_ff
    attentions = model_config.n_encoder_layers + 2 * model_config.n_decoder_layers
    feedforwards = model_config.n_encoder_layers + model_config.n_decoder_layers
    size = {"w_q": (d, d), "w_k": (d, d), "w_v": (d, d), "w_o": (d, d),
            "linear1": (d, d_ff), "linear2": (d_ff, d)}
    count = 0
    for target in targets:
        n = feedforwards if target.startswith("linear") else attentions
        count += n * rank * sum(size[target])
    return count


def test_the_reference_solution_is_correct(notebook):
    assert notebook["check_lora_parameters"](lora_parameters).startswith("lora_parameters: correct")


def test_the_committed_stub_gets_not_yet(notebook):
    assert notebook["check_lora_parameters"](notebook["lora_parameters"]).startswith("lora_parameters: not yet")


def test_typical_mistakes_get_not_yet_and_never_raise(notebook):
    check_count = notebook["check_lora_parameters"]

    def raises(*args):
        raise ValueError("shapes")

    def no_cross_attention(config, rank, targets):
        return lora_parameters(config, rank, targets) - (
            config.n_decoder_layers * rank * 2 * config.d_model * sum(t.startswith("w_") for t in targets))

    def square_feedforward(config, rank, targets):
        return sum(lora_parameters(config, rank, (t,)) if t.startswith("w_") else
                   (config.n_encoder_layers + config.n_decoder_layers) * rank * 2 * config.d_model
                   for t in targets)

    assert check_count(no_cross_attention).startswith("lora_parameters: not yet: for d_model 64")
    assert check_count(square_feedforward).startswith("lora_parameters: not yet: for d_model 24")
    assert check_count(raises).startswith("lora_parameters: not yet: it raised ValueError")
