"""load_pretrained: a Hugging Face folder (GPT-2 or LLaMA) opened as our DecoderOnlyTransformer."""

from __future__ import annotations

import json
import os
import re

import numpy as np

from ..nn.models import DecoderOnlyTransformer
from . import gpt2, llama
from .namemap import PretrainedError, rows_for, to_ours
from .safetensors import read_folder_tensors

FAMILIES = {family.MODEL_TYPE: family for family in (gpt2, llama)}


class Undrawn(np.random.Generator):
    """A Generator that draws no initial weights: ``uniform`` and ``standard_normal`` (the
    two the layers draw their weights with) give float32 zeros, which a float32 layer keeps
    as its parameter without a copy.

    For a model whose every parameter is overwritten at once from a file: drawing GPT-2
    small's 124 M random numbers, in float64 and then cast, took 3.3 s of a 4.1 s load
    (2-core AMD EPYC). Every other method is a real Generator's (the model's Dropouts keep
    it for their masks).
    """

    def uniform(self, low=0.0, high=1.0, size=None):
        return np.zeros(size, np.float32)

    def standard_normal(self, size=None, dtype=np.float64, out=None):
        return np.zeros(size, np.float32)


def read_hf_config(folder: str | os.PathLike) -> dict:
    """The folder's config.json, parsed."""
    path = os.path.join(folder, "config.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{folder}: no config.json (a Hugging Face model folder has one)")
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def family_of(hf: dict):
    """The module (gpt2 or llama) that knows this config's model_type."""
    model_type = hf.get("model_type")
    if model_type not in FAMILIES:
        raise PretrainedError(f"config.json: model_type {model_type!r} is not supported "
                              f"(supported: {', '.join(map(repr, FAMILIES))})")
    return FAMILIES[model_type]


def strip_prefix(tensors: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    """The tensors by their names without ``prefix`` ("transformer." or "model."), which files
    written from the bare model (and the hub's GPT-2) leave out."""
    stripped = {}
    for name, tensor in tensors.items():
        short = name[len(prefix):] if name.startswith(prefix) else name
        if short in stripped:
            raise PretrainedError(f"tensor {short!r} is in the checkpoint twice, with and without {prefix!r}")
        stripped[short] = tensor
    return stripped


def load_pretrained(path: str | os.PathLike, dtype=np.float32) -> DecoderOnlyTransformer:
    """The model in a Hugging Face folder (config.json + model.safetensors, or the shards a
    model.safetensors.index.json names), as a DecoderOnlyTransformer with every parameter of
    ``dtype`` (F64, F32, F16 and BF16 files are all converted to it).

    model_type "gpt2" or "llama" (gpt2.py and llama.py hold the name tables and say which
    settings are refused). Every tensor the config implies must be there with the config's
    shape; a tensor no table row names is an error too, except the non-parameter buffers
    some files carry and a tied model's lm_head.weight when it equals the embedding. The
    model's dropout is 0: the file's dropout rates act only in training, and GPT-2 places one
    where this model has none (on the embeddings). Like any new model, it is in training mode.
    """
    hf = read_hf_config(path)
    family = family_of(hf)
    config = family.config_from_hf(hf)
    tensors = strip_prefix(read_folder_tensors(path), family.PREFIX)
    # every parameter is overwritten below (load_state_dict is strict): nothing to draw
    model = DecoderOnlyTransformer(config, rng=Undrawn(np.random.PCG64(0)), dtype=dtype)
    params = {name: param for name, param, _ in model.named_parameters()}
    rows = rows_for(family.TABLE, config)
    state = to_ours(rows, tensors, params)
    leftover = sorted(set(tensors) - {row.theirs for row in rows})
    leftover = [name for name in leftover if not any(re.fullmatch(b, name) for b in family.BUFFERS)]
    if config.tie_embeddings and "lm_head.weight" in leftover:
        if not np.array_equal(tensors["lm_head.weight"], state["embed.weight"]):
            raise PretrainedError("tensor 'lm_head.weight' differs from the token embedding, but "
                                  "config.json says tie_word_embeddings (one matrix for both)")
        leftover.remove("lm_head.weight")
    if leftover:
        raise PretrainedError(f"the checkpoint holds tensors the config does not describe: "
                              f"{', '.join(leftover[:6])}" + (" ..." if len(leftover) > 6 else ""))
    model.load_state_dict(state)          # copies into the model's arrays, converting to dtype
    return model
