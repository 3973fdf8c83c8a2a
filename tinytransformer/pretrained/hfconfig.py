"""What GPT-2's and LLaMA's config.json have in common: absent keys, special tokens, refusals.

A key absent from config.json means what transformers' config class assumes for it; each
family (gpt2.py, llama.py) lists those defaults, so a number is always read, from the file
or from that list, never guessed here.
"""

from __future__ import annotations

from .namemap import PretrainedError


def setting(hf: dict, key: str, defaults: dict):
    """``hf[key]``, or transformers' default for it when config.json does not give it."""
    return hf[key] if key in hf else defaults[key]


def refuse(model_type: str, reasons: list[str]) -> None:
    """Raise a PretrainedError listing every reason, if there is any."""
    if reasons:
        raise PretrainedError(f"this {model_type} checkpoint is not supported: " + "; ".join(reasons))


def common_refusals(hf: dict) -> list[str]:
    """What neither family computes here, whatever the model_type says."""
    reasons = []
    if hf.get("quantization_config") is not None:
        reasons.append("quantization_config is set (quantized weights are not read here)")
    if hf.get("sliding_window") is not None or hf.get("use_sliding_window"):
        reasons.append(f"sliding_window {hf.get('sliding_window')!r} (every query here sees all "
                       f"earlier keys)")
    return reasons


def special_ids(hf: dict, defaults: dict) -> dict:
    """pad_id, bos_id and eos_id for TransformerConfig from pad/bos/eos_token_id.

    A list of eos ids (LLaMA 3) gives its first: decoding stops there only. No eos id (a
    character model of a text, exported) gives eos_id None: decoding runs to its length. A pad token
    that is also bos or eos (a common way of giving GPT-2 a pad token) gives pad_id None:
    here the pad id masks keys, and every eos would be masked.
    """
    pad, bos, eos = (setting(hf, f"{name}_token_id", defaults) for name in ("pad", "bos", "eos"))
    if isinstance(eos, list):
        eos = eos[0] if eos else None
    if pad is not None and pad in (bos, eos):
        pad = None
    return dict(pad_id=pad, bos_id=bos, eos_id=eos)


def token_ids_for_hf(config) -> dict:
    """pad/bos/eos_token_id for config.json, from the TransformerConfig."""
    return dict(pad_token_id=config.pad_id, bos_token_id=config.bos_id, eos_token_id=config.eos_id)


def config_refusals(config) -> list[str]:
    """What no GPT-2 or LLaMA checkpoint can say of a TransformerConfig, whatever the family."""
    reasons = []
    if not config.norm_first:
        reasons.append("norm_first=False (post-LN: GPT-2 and LLaMA normalise before each sublayer)")
    if config.head_bias:
        reasons.append("head_bias=True (GPT-2's and LLaMA's output heads have no bias)")
    if config.embed_scale:
        reasons.append("embed_scale=True (GPT-2 and LLaMA do not multiply the embeddings by sqrt(D))")
    return reasons
