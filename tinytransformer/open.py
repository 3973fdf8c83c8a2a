"""One way in: a trained run or a pre-trained folder, opened into a model and its tokens.

    model, tokens, info = open_model(path)

``path`` is any of

- a toy run directory or checkpoint file: ``tokens`` is the task's ``Vocab`` (sequences of
  symbols written "3 1 4"), None for a checkpoint saved without its task;
- a text run directory or checkpoint: ``tokens`` is the tokenizer the run saved (strings in
  and out);
- a Hugging Face folder (config.json and model.safetensors, or its sharded index): the model
  from ``load_pretrained`` and the folder's tokenizer from ``load_tokenizer``.

``info`` says which (``info["kind"]``: "toy", "text" or "pretrained") and holds what
``load_checkpoint`` gives (config, step, task, lora, path, ...); a pre-trained folder has no
step and no task. Every command that reads a model (generate, eval, plot, merge, export,
train --init-from) opens it here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .checkpoint import is_pretrained_folder, load_checkpoint, read_checkpoint
from .nn.transformer import TransformerConfig
from .pretrained import load_pretrained
from .pretrained.load import family_of, read_hf_config
from .tokenizers import load_tokenizer
from .vocab import Vocab

__all__ = ["open_model", "open_config", "is_pretrained_folder", "toy_vocab"]


def toy_vocab(task: dict | None) -> Vocab | None:
    """The vocabulary a toy run's recorded task gives (SEP for the decoder-only format); None for
    a checkpoint saved without its task."""
    try:
        return Vocab(task["n_symbols"], with_sep=task["model"] == "decoder-only")
    except (KeyError, TypeError, ValueError):
        return None


def _pretrained_tokenizer(folder: Path):
    try:
        return load_tokenizer(folder)
    except (FileNotFoundError, ValueError) as err:
        raise ValueError(f"{folder}: its tokenizer cannot be read, and text in and out needs one: "
                         f"{err}") from None


def open_model(path, which: str | None = None, dtype=np.float32):
    """(model, tokens, info) of a run directory, a checkpoint file or a Hugging Face folder.

    ``which``: "best" or "last" of a run directory (default best). ``dtype``: a pre-trained
    folder's parameters are converted to it (a checkpoint keeps the dtype it was saved in).
    """
    path = Path(path)
    if is_pretrained_folder(path):
        model = load_pretrained(path, dtype)
        tokenizer = _pretrained_tokenizer(path)
        return model, tokenizer, {"kind": "pretrained", "config": model.config, "step": None,
                                  "task": None, "lora": None, "path": path, "tokenizer": tokenizer,
                                  "model_class": type(model).__name__, "dtype": np.dtype(dtype).name}
    model, info = load_checkpoint(path, which=which)
    if info["tokenizer"] is not None:
        return model, info["tokenizer"], {**info, "kind": "text"}
    return model, toy_vocab(info["task"]), {**info, "kind": "toy"}


def open_config(path) -> tuple[str, TransformerConfig, object, dict]:
    """(model class name, config, tokens, info) without building the model: what a run that
    starts from ``path`` needs to know before it loads the weights."""
    path = Path(path)
    if is_pretrained_folder(path):
        hf = read_hf_config(path)
        config = family_of(hf).config_from_hf(hf)
        tokenizer = _pretrained_tokenizer(path)
        return "DecoderOnlyTransformer", config, tokenizer, {"kind": "pretrained", "path": path,
                                                            "task": None}
    meta, _, file = read_checkpoint(path)
    config = TransformerConfig.from_dict(meta["config"])
    task = meta.get("task") or {}
    if task.get("tokenizer_dir"):
        tokens = load_tokenizer(file.parent / task["tokenizer_dir"])
        return meta["model_class"], config, tokens, {"kind": "text", "path": file, "task": task}
    return meta["model_class"], config, None, {"kind": "toy", "path": file, "task": task}
