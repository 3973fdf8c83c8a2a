"""save_pretrained: our decoder-only model written as a Hugging Face GPT-2 or LLaMA folder."""

from __future__ import annotations

import os
from types import ModuleType

import numpy as np

from ..atomic import save_json
from ..nn.models import DecoderOnlyTransformer, Transformer
from . import gpt2, llama
from .namemap import PretrainedError, rows_for, to_theirs
from .safetensors import INDEX_FILE, SHARD_NAME, write_safetensors, write_sharded

METADATA = {"format": "pt"}          # transformers reads a file only if its header says this


def remove_old_weights(folder: str | os.PathLike, keep: set[str]) -> None:
    """Delete the weight files an earlier save may have left in ``folder`` (model.safetensors,
    the index and its shards) but those in ``keep``, the ones just written: a stale index
    beside a new single file would be read instead."""
    for name in os.listdir(folder):
        if name not in keep and (name in ("model.safetensors", INDEX_FILE) or SHARD_NAME.fullmatch(name)):
            os.remove(os.path.join(folder, name))


def family_for(model) -> ModuleType:
    """gpt2 (learned positions) or llama (rotary), or a PretrainedError saying why neither fits."""
    if not isinstance(model, DecoderOnlyTransformer):
        what = "an encoder-decoder" if isinstance(model, Transformer) else f"a {type(model).__name__}"
        raise PretrainedError(f"save_pretrained: {what} has no GPT-2 or LLaMA equivalent (those are "
                              f"decoder-only models: DecoderOnlyTransformer)")
    config = model.config
    families = {"learned": gpt2, "rope": llama}
    if config.positional not in families:
        raise PretrainedError(f"save_pretrained: positional {config.positional!r} has no GPT-2 or LLaMA "
                              f"equivalent (GPT-2 learns its positions, 'learned'; LLaMA rotates, 'rope')")
    family = families[config.positional]
    reasons = family.refusals(config)
    if reasons:
        raise PretrainedError(f"save_pretrained: this model has no {family.MODEL_TYPE} equivalent: "
                              + "; ".join(reasons))
    return family


def hf_tensors(family: ModuleType, rows: list, state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Our ``state`` (or gradients, by the same names) as the Hugging Face tensors of
    ``family``'s causal-LM class, full names: the prefix on every one but lm_head."""
    return {name if name.startswith("lm_head.") else family.PREFIX + name: tensor
            for name, tensor in to_theirs(rows, state).items()}


def save_pretrained(model: DecoderOnlyTransformer, path: str | os.PathLike, tokenizer=None,
                    max_shard_bytes: int | None = None) -> None:
    """Write ``model`` to the folder ``path`` (created if needed) as transformers' GPT-2 (learned
    positions) or LLaMA (rotary positions): config.json and model.safetensors, the tensors in
    the model's own dtype, only rearranged (transposed, concatenated), never rescaled.

    ``AutoModelForCausalLM.from_pretrained(path)`` gives the same logits. With
    ``max_shard_bytes`` the tensors go to shards of at most that size beside
    model.safetensors.index.json. ``tokenizer.save(path)`` writes the tokenizer's files
    when one is given. A model with no GPT-2 or LLaMA equivalent (encoder-decoder,
    other positions, post-LN, another activation or norm, a biased head, LoRA adapters
    not merged...) is refused with the reason, and nothing is written.
    """
    family = family_for(model)
    state = {name: param for name, param, _ in model.named_parameters()}
    rows = rows_for(family.TABLE, model.config)
    extra = sorted(set(state) - {name for row in rows for name in row.ours})
    if extra:
        hint = " (LoRA adapters: merge_lora(model) first)" if any("lora_" in name for name in extra) else ""
        raise PretrainedError(f"save_pretrained: parameters with no place in a {family.MODEL_TYPE} "
                              f"checkpoint: {', '.join(extra[:6])}{hint}")
    tensors = hf_tensors(family, rows, state)
    config = family.hf_config(model.config) | {"dtype": str(model.dtype)}
    # each file is written whole (atomic_write); an earlier save's weights go only once the new
    # ones are in place, so an interrupted save leaves a folder that still loads
    os.makedirs(path, exist_ok=True)
    if max_shard_bytes is None:
        write_safetensors(os.path.join(path, "model.safetensors"), tensors, METADATA)
        written = {"model.safetensors"}
    else:
        written = {INDEX_FILE, *write_sharded(path, tensors, max_shard_bytes, METADATA)}
    remove_old_weights(path, keep=written)
    save_json(os.path.join(path, "config.json"), config)
    if tokenizer is not None:
        tokenizer.save(path)
