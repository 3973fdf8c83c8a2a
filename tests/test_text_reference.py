"""The reference text run's benchmark: its PyTorch peer computes the NumPy model's function, a short
run records what the table needs, and the committed table is what the script writes from its results."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from tinytransformer import CharTokenizer, DecoderOnlyTransformer
from tinytransformer import text_task
from tinytransformer.text import TextData

from repo_scripts import load_script

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "textref.json"


def load(name: str):
    """benchmarks/<name>.py, imported as a module."""
    return load_script(ROOT / "benchmarks" / f"{name}.py", name)


text_reference = load("text_reference")
SMALL = {**text_reference.RECIPE, "n_layers": 2, "d_model": 16, "n_heads": 2, "d_ff": 24, "block_size": 12,
         "batch_size": 3, "steps": 3, "warmup": 1, "eval_every": 2}
TEXT = "The cat sat on the mat.\ndef f(x):\n    if x:\n        return x\n" * 12   # the prompts' characters


@pytest.mark.parametrize("activation", ["gelu_tanh", "gelu"])
def test_the_peer_computes_the_numpy_model_and_its_gradients_in_float64(activation):
    torch = pytest.importorskip("torch", reason="PyTorch is the peer's reference")
    peer = load("torch_text_peer")
    config = dataclasses.replace(text_reference.model_config(11, SMALL), activation=activation)
    np_model = DecoderOnlyTransformer(config, rng=np.random.default_rng(0)).astype(np.float64)
    for _, param, _ in np_model.named_parameters():          # biases and norms away from their init
        param += 0.1 * np.random.default_rng(1).standard_normal(param.shape)
    model = peer.TorchDecoderOnly(config).double()
    peer.load_numpy_weights(model, np_model)
    ids = np.random.default_rng(2).integers(0, 11, size=(3, 9))
    logits = model(torch.from_numpy(ids))
    np.testing.assert_allclose(logits.detach().numpy(), np_model(ids), rtol=0, atol=1e-10)
    dlogits = np.random.default_rng(3).standard_normal(logits.shape)
    logits.backward(torch.from_numpy(dlogits))
    np_model.zero_grad()
    np_model.backward(dlogits)
    theirs = dict(model.named_parameters())
    for name, param, grad in np_model.named_parameters():
        want = theirs[name].grad.numpy()
        linear_weight = grad.ndim == 2 and not name.startswith(("embed.", "pos."))    # torch's is (out, in)
        np.testing.assert_allclose(grad, want.T if linear_weight else want, rtol=0, atol=1e-10, err_msg=name)


def test_the_benchmarks_run_is_the_command_lines_text_run():
    recipe = text_reference.RECIPE
    train = text_task.text_train_config()
    for field in ("batch_size", "lr", "min_lr", "betas", "eps", "weight_decay", "warmup", "clip", "steps",
                  "eval_every", "block_size"):
        assert getattr(train, field) == recipe[field], field
    assert train.minutes * 60 == text_reference.parse_args([]).budget
    tokenizer = CharTokenizer.from_text(TEXT)
    assert text_reference.model_config(tokenizer.vocab_size, recipe) == \
        text_task.text_model_config(tokenizer, recipe["block_size"])


def test_the_peer_refuses_a_model_it_is_not_written_for():
    pytest.importorskip("torch", reason="PyTorch is the peer's reference")
    peer = load("torch_text_peer")
    config = text_reference.model_config(11, SMALL)
    config.positional = "rope"
    with pytest.raises(ValueError, match="the peer is written for the text run's model only"):
        peer.TorchDecoderOnly(config)


@pytest.mark.parametrize("side", ["NumPy", "PyTorch"])
def test_a_short_run_records_its_evaluations_and_the_numpy_side_its_samples(side):
    if side == "PyTorch":
        pytest.importorskip("torch", reason="PyTorch is the peer's reference")
    data = TextData.from_text(TEXT, CharTokenizer.from_text(TEXT), SMALL["block_size"])
    result, _ = text_reference.run(side, 0, data, SMALL, budget=float("inf"))
    assert [e["step"] for e in result["evals"]] == [2, 3] and result["steps"] == 3
    assert result["final_bpc"] == result["evals"][-1]["bpc"] > 0
    reached = [e for e in result["evals"] if e["bpc"] <= text_reference.TARGET]
    assert result["target_step"] == (reached[0]["step"] if reached else None)
    assert ("samples" in result) == (side == "NumPy")


def test_both_sides_start_from_the_same_loss():
    pytest.importorskip("torch", reason="PyTorch is the peer's reference")
    data = TextData.from_text(TEXT, CharTokenizer.from_text(TEXT), SMALL["block_size"])
    first = [text_reference.run(side, 0, data, {**SMALL, "steps": 2, "eval_every": 1}, float("inf"))[0]
             for side in ("NumPy", "PyTorch")]
    assert first[0]["first_losses"][0] == pytest.approx(first[1]["first_losses"][0], rel=1e-5)


def test_the_committed_table_is_what_the_script_writes_from_its_results():
    saved = json.loads(RESULTS.read_text())
    assert RESULTS.with_suffix(".md").read_text() == text_reference.markdown(saved)
    assert saved["target"] == text_reference.TARGET


def test_a_recipe_change_names_what_it_may_change():
    args = text_reference.parse_args(["--set", "lr=2e-3", "--set", "steps=10"])
    assert text_reference.recipe_from(args) == {**text_reference.RECIPE, "lr": 2e-3, "steps": 10}
    with pytest.raises(SystemExit, match="expected NAME=VALUE with NAME one of n_layers"):
        text_reference.recipe_from(text_reference.parse_args(["--set", "lrr=1"]))
