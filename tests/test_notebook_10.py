"""Notebook 10 (GPT-2 in NumPy) beyond running as committed (tests/test_notebooks.py runs it with no
folder): it also runs on a folder written by transformers, as a learner's `hf download` folder would
be, and the small model it opens for the heads section predicts the repeated half, as its text says."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import nbformat
import numpy as np
import pytest
from nbclient import NotebookClient

from tinytransformer import BPETokenizer, load_pretrained
from tinytransformer.text import default_corpus

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "10_gpt2.ipynb"
INDUCTION_MODEL = ROOT / "notebooks" / "data" / "induction_gpt2"


def test_the_committed_small_model_predicts_the_repeated_half():
    """On L random tokens written twice (other tokens than its training drew, at two lengths it was
    trained at), the committed model predicts the second half (the loss far below ln 512) and not
    the first (the loss near it), as the notebook says."""
    model = load_pretrained(INDUCTION_MODEL).eval()
    for L in (13, 24):
        seqs = np.random.default_rng(L).integers(0, model.config.vocab_size, size=(8, L))
        ids = np.concatenate([seqs, seqs], axis=1)                               # (B, 2L)
        logits = model(ids)                                                      # (B, 2L, V)
        logp = logits - logits.max(-1, keepdims=True)
        logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
        nll = -np.take_along_axis(logp[:, :-1], ids[:, 1:, None], -1)[..., 0]    # (B, 2L - 1)
        assert nll[:, L:].mean() < 1.0 and nll[:, :L - 1].mean() > 5.0, (L, nll[:, L:].mean())


def test_the_notebook_runs_on_a_folder_transformers_wrote(tmp_path):
    """GPT2_DIR set: the notebook opens that folder (the "transformer." prefix transformers writes,
    its tokenizer files) instead of making its own; every cell runs."""
    transformers = pytest.importorskip("transformers", reason="writes the folder as the hub's tools do")
    import torch

    folder = tmp_path / "gpt2"
    tokenizer = BPETokenizer.train(default_corpus()[:20_000], 300)
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=3, n_embd=48, n_head=3, vocab_size=tokenizer.vocab_size,
                                     n_positions=96, bos_token_id=0, eos_token_id=0)
    transformers.GPT2LMHeadModel(config).save_pretrained(folder)
    tokenizer.save(folder)
    copy = tmp_path / NOTEBOOK.name
    shutil.copy(NOTEBOOK, copy)
    nb = nbformat.read(copy, as_version=4)
    env = {**os.environ, "GPT2_DIR": str(folder)}
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute(env=env)
    first = "".join(out.get("text", "") for out in nb.cells[1].outputs)
    assert first.startswith(f"the folder GPT2_DIR names: {folder}")
    heads = "".join(out.get("text", "") for cell in nb.cells if cell.cell_type == "code"
                    for out in cell.outputs)
    assert "trained on repeated sequences" not in heads          # only the folder's own model
