"""GPT-2 (model_type "gpt2"): its tensor names, its config.json, and what we refuse.

GPT-2 is our DecoderOnlyTransformer with learned positions, pre-LN LayerNorms, the tanh GELU,
biases on every attention and feed-forward Linear, no bias on the output head, no sqrt(D)
on the embeddings, and (usually) the head tied to the token embedding. Its "Conv1D" layers
keep their weights as (in, out), like our Linear, so nothing is transposed but lm_head.
"""

from __future__ import annotations

from ..nn.config import TransformerConfig
from .hfconfig import common_refusals, config_refusals, refuse, setting, special_ids, token_ids_for_hf
from .namemap import AS_IS, SPLIT_QKV, TRANSPOSE, Row

MODEL_TYPE = "gpt2"
PREFIX = "transformer."                 # what GPT2LMHeadModel puts before every name but lm_head
ARCHITECTURE = "GPT2LMHeadModel"

# one row per Hugging Face tensor ({i}: block number; names without the "transformer." prefix)
#   their name, our parameter(s), what happens on the way in (undone on the way out), only if
TABLE = [
    Row("wte.weight",                "embed.weight",                   AS_IS),
    Row("wpe.weight",                "pos.weight",                     AS_IS),
    Row("h.{i}.ln_1.weight",         "layers.{i}.norm1.weight",        AS_IS),
    Row("h.{i}.ln_1.bias",           "layers.{i}.norm1.bias",          AS_IS),
    Row("h.{i}.attn.c_attn.weight",  ("layers.{i}.self_attn.w_q.weight", "layers.{i}.self_attn.w_k.weight",
                                      "layers.{i}.self_attn.w_v.weight"), SPLIT_QKV),
    Row("h.{i}.attn.c_attn.bias",    ("layers.{i}.self_attn.w_q.bias", "layers.{i}.self_attn.w_k.bias",
                                      "layers.{i}.self_attn.w_v.bias"), SPLIT_QKV),
    Row("h.{i}.attn.c_proj.weight",  "layers.{i}.self_attn.w_o.weight", AS_IS),
    Row("h.{i}.attn.c_proj.bias",    "layers.{i}.self_attn.w_o.bias",  AS_IS),
    Row("h.{i}.ln_2.weight",         "layers.{i}.norm2.weight",        AS_IS),
    Row("h.{i}.ln_2.bias",           "layers.{i}.norm2.bias",          AS_IS),
    Row("h.{i}.mlp.c_fc.weight",     "layers.{i}.ff.linear1.weight",   AS_IS),
    Row("h.{i}.mlp.c_fc.bias",       "layers.{i}.ff.linear1.bias",     AS_IS),
    Row("h.{i}.mlp.c_proj.weight",   "layers.{i}.ff.linear2.weight",   AS_IS),
    Row("h.{i}.mlp.c_proj.bias",     "layers.{i}.ff.linear2.bias",     AS_IS),
    Row("ln_f.weight",               "norm.weight",                    AS_IS),
    Row("ln_f.bias",                 "norm.bias",                      AS_IS),
    Row("lm_head.weight",            "out_proj.weight",                TRANSPOSE, only_if="untied"),
]
# tensors some files hold that are not parameters: the causal mask and its fill value
BUFFERS = (r"h\.\d+\.attn\.bias", r"h\.\d+\.attn\.masked_bias")

# what transformers' GPT2Config assumes for a key config.json leaves out
DEFAULTS = dict(vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12, n_head=12, n_inner=None,
                activation_function="gelu_new", layer_norm_epsilon=1e-5, tie_word_embeddings=True,
                scale_attn_weights=True, scale_attn_by_inverse_layer_idx=False,
                reorder_and_upcast_attn=False, add_cross_attention=False,
                pad_token_id=None, bos_token_id=50256, eos_token_id=50256)
# their activation name -> ours ("gelu_new" and "gelu_pytorch_tanh" are both the tanh formula)
ACTIVATIONS = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu"}
ACTIVATION_NAMES = {"gelu_tanh": "gelu_new", "gelu": "gelu"}


def config_from_hf(hf: dict) -> TransformerConfig:
    """Our TransformerConfig from GPT-2's config.json (already parsed), or a PretrainedError
    naming everything it says that this model does not compute."""
    def get(key):
        return setting(hf, key, DEFAULTS)

    reasons = common_refusals(hf)
    if get("activation_function") not in ACTIVATIONS:
        reasons.append(f"activation_function {get('activation_function')!r} (supported: "
                       f"{', '.join(ACTIVATIONS)})")
    for key, want in (("scale_attn_weights", True), ("scale_attn_by_inverse_layer_idx", False),
                      ("reorder_and_upcast_attn", False), ("add_cross_attention", False)):
        if get(key) != want:
            reasons.append(f"{key}={get(key)!r} (supported: {want})")
    refuse(MODEL_TYPE, reasons)
    d_model = get("n_embd")
    return TransformerConfig(
        vocab_size=get("vocab_size"), d_model=d_model, n_heads=get("n_head"),
        d_ff=get("n_inner") if get("n_inner") is not None else 4 * d_model,
        n_encoder_layers=0, n_decoder_layers=get("n_layer"), max_len=get("n_positions"),
        norm_first=True, activation=ACTIVATIONS[get("activation_function")], positional="learned",
        norm="layernorm", norm_eps=get("layer_norm_epsilon"), bias=True, head_bias=False,
        embed_scale=False, tie_embeddings=get("tie_word_embeddings"), **special_ids(hf, DEFAULTS))


def refusals(config: TransformerConfig) -> list[str]:
    """Why a model with this config (learned positions) has no GPT-2 equivalent; empty if it has one."""
    reasons = config_refusals(config)
    if config.norm != "layernorm":
        reasons.append(f"norm {config.norm!r} (GPT-2 uses 'layernorm')")
    if config.activation not in ACTIVATION_NAMES:
        reasons.append(f"activation {config.activation!r} (GPT-2 uses 'gelu_tanh', or 'gelu')")
    if not config.bias:
        reasons.append("bias=False (GPT-2 has a bias on every attention and feed-forward Linear)")
    if config.kv_heads != config.n_heads:
        reasons.append(f"n_kv_heads={config.n_kv_heads} (GPT-2 has as many key/value heads as query heads)")
    return reasons


def hf_config(config: TransformerConfig) -> dict:
    """GPT-2's config.json for a config that ``refusals`` accepts."""
    return dict(
        architectures=[ARCHITECTURE], model_type=MODEL_TYPE, vocab_size=config.vocab_size,
        n_positions=config.max_len, n_embd=config.d_model, n_layer=config.n_decoder_layers,
        n_head=config.n_heads, n_inner=config.d_ff, activation_function=ACTIVATION_NAMES[config.activation],
        layer_norm_epsilon=config.norm_eps, tie_word_embeddings=config.tie_embeddings,
        resid_pdrop=config.dropout, embd_pdrop=0.0, attn_pdrop=config.dropout,
        **token_ids_for_hf(config))
