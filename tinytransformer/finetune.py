"""Fine-tuning: a new run that starts from a trained one, fully, with frozen parts, or with LoRA.

    train --init-from RUN_DIR ...                   every weight trains on the new task
    train --init-from RUN_DIR --freeze encoder      the encoder keeps its trained weights
    train --init-from RUN_DIR --lora-rank 4         adapters on every attention and feed-forward
                                                    Linear; every trained weight stays as it was

RUN_DIR may also be a Hugging Face folder (``open.py`` opens either).

The new run takes the trained run's model (its config and best weights) and the
task and recipe of its own TrainConfig (``train.py`` checks that the model fits
the task). A frozen weight keeps a zero gradient and is never updated
(``Module.requires_grad_``); a LoRA run's checkpoints hold only the adapters and
point at the trained run's checkpoint (``checkpoint.py``).
"""

from __future__ import annotations

import numpy as np

from .checkpoint import model_generators
from .nn.lora import add_lora, lora_settings, merge_lora
from .nn.module import Module
from .nn.transformer import DecoderOnlyTransformer, TransformerConfig
from .open import open_model

__all__ = ["FREEZE_PARTS", "freeze", "start_from", "check_trained_config"]

FREEZE_PARTS = ("encoder", "decoder", "embeddings")


def _part(model: Module, part: str) -> list[Module]:
    """The modules a ``--freeze`` part names. The output projection belongs to no part; a
    model whose positions are not added to the embeddings (RoPE, ALiBi, none) has no ``pos``."""
    if isinstance(model, DecoderOnlyTransformer):
        parts = {"decoder": [*model.layers] + ([model.norm] if hasattr(model, "norm") else []),
                 "embeddings": [model.embed, model.pos]}
    else:
        parts = {"encoder": [model.encoder], "decoder": [model.decoder],
                 "embeddings": [model.src_embed, model.tgt_embed, model.pos]}
    if part not in parts:
        raise ValueError(f"freeze: expected one of {sorted(parts)} for a {type(model).__name__}, "
                         f"got {part!r}")
    return [module for module in parts[part] if module is not None]


def freeze(model: Module, parts) -> Module:
    """Freeze the named parts ("encoder", "decoder", "embeddings") of ``model``; return it.

    With tied embeddings the output projection's weight is the embedding matrix, so
    freezing the embeddings freezes it there too.
    """
    for part in parts:
        for module in _part(model, part):
            module.requires_grad_(False)
        if part == "embeddings" and model.config.tie_embeddings:
            model.out_proj.frozen.add("weight")
    return model


def start_from(init_from, rng: np.random.Generator, lora_rank: int | None = None,
               lora_alpha: float | None = None, frozen_parts=(),
               lora_targets=("w_q", "w_v")) -> Module:
    """The model of a trained run (its best checkpoint), ready to train on: with LoRA
    adapters on the Linears named ``lora_targets`` (drawn from ``rng``) and the rest frozen, or
    with ``frozen_parts`` frozen, or (neither) all of it trainable. A run that was itself
    fine-tuned with LoRA starts from its merged weights.

    The dropout masks continue from ``rng``, as in a model built from scratch, which draws
    its weights and then its masks from one Generator: the new run's seed decides them.
    """
    model = open_model(init_from)[0]
    if lora_settings(model) is not None:
        merge_lora(model)
    model.requires_grad_(True)
    if lora_rank is not None:
        add_lora(model, lora_rank, lora_alpha, lora_targets, rng=rng)
    freeze(model, frozen_parts)
    for generator in model_generators(model):
        generator.bit_generator.state = rng.bit_generator.state
    return model


def check_trained_config(init_from, base: TransformerConfig, model_config: TransformerConfig | None,
                         lora_rank: int | None, frozen_parts) -> None:
    """Refuse what cannot change or does not exist in the trained model ``base`` of ``init_from``:
    a ``model_config`` that differs from it, a LoRA rank above its d_model (the attention
    projections are d_model x d_model), an encoder to freeze in a decoder-only model."""
    if model_config is not None and model_config != base:
        had = base.to_dict()
        differences = [f"{key} {value!r} (the trained model has {had[key]!r})"
                       for key, value in model_config.to_dict().items() if had[key] != value]
        raise ValueError(f"init_from: the model is the one in {init_from}; its config cannot change: "
                         + "; ".join(differences))
    if base.n_encoder_layers == 0 and "encoder" in frozen_parts:
        raise ValueError(f"freeze: the model in {init_from} is decoder-only, it has no encoder; "
                         f"expected decoder or embeddings")
    if lora_rank is not None and lora_rank > base.d_model:
        raise ValueError(f"lora_rank: expected an integer from 1 to min(in_features, out_features) = "
                         f"d_model = {base.d_model} for the attention projections of the model in "
                         f"{init_from}, got {lora_rank}")
