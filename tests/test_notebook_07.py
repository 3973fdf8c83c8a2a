"""The exercises of notebook 07: its own check functions, run here on reference solutions.

The checks are read from the committed notebook (the cells that define them), so what is tested is
what a learner runs: a right solution gets "correct", the committed stub and typical mistakes get
"not yet", and no check raises.
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
        if source.lstrip().startswith(("def lora_backward(", "def lora_parameters(",
                                       "def check_lora_backward(", "def check_lora_parameters(")):
            body = "\n".join(line for line in source.splitlines() if not line.startswith("print("))
            exec(body, namespace)
    return namespace


def lora_backward(x, A, B, W, scale, dy):
    h = x @ A                                   # (N, r)
    dB = scale * h.T @ dy                       # (r, O)
    dh = scale * dy @ B.T                       # (N, r)
    return dy @ W.T + dh @ A.T, x.T @ dh, dB


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


def test_the_reference_solutions_are_correct(notebook):
    assert notebook["check_lora_backward"](lora_backward).startswith("lora_backward: correct")
    assert notebook["check_lora_parameters"](lora_parameters).startswith("lora_parameters: correct")


def test_the_committed_stubs_get_not_yet(notebook):
    assert notebook["check_lora_backward"](notebook["lora_backward"]).startswith("lora_backward: not yet")
    assert notebook["check_lora_parameters"](notebook["lora_parameters"]).startswith("lora_parameters: not yet")


def test_typical_mistakes_get_not_yet_and_never_raise(notebook):
    check_backward, check_count = notebook["check_lora_backward"], notebook["check_lora_parameters"]

    def scale_forgotten_in_dA(x, A, B, W, scale, dy):
        dx, _, dB = lora_backward(x, A, B, W, scale, dy)
        return dx, x.T @ dy @ B.T, dB

    def lora_path_forgotten_in_dx(x, A, B, W, scale, dy):
        _, dA, dB = lora_backward(x, A, B, W, scale, dy)
        return dy @ W.T, dA, dB

    def transposed(x, A, B, W, scale, dy):
        dx, dA, dB = lora_backward(x, A, B, W, scale, dy)
        return dx, dA, dB.T

    def raises(*args):
        raise ValueError("shapes")

    report = check_backward(scale_forgotten_in_dA)
    assert report.startswith("lora_backward: not yet: dA is wrong") and "factor of scale" in report
    assert check_backward(lora_path_forgotten_in_dx).startswith("lora_backward: not yet: dx is wrong")
    assert check_backward(transposed).startswith("lora_backward: not yet: dB has shape")
    assert check_backward(raises).startswith("lora_backward: not yet: it raised ValueError")

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
