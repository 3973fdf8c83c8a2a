"""LLaMA (model_type "llama"): its tensor names, its config.json, and what we refuse.

LLaMA is our DecoderOnlyTransformer with rotary positions (rotate-half, base ``rope_theta``),
pre-norm RMSNorms, the SwiGLU feed-forward (gate_proj = linear1, up_proj = linear3,
down_proj = linear2), grouped-query attention when num_key_value_heads < num_attention_heads,
no biases (unless attention_bias and mlp_bias say so, both), no bias on the output head and
no sqrt(D) on the embeddings. torch's nn.Linear keeps (out, in) weights: each is transposed.
"""

from __future__ import annotations

from ..nn.config import TransformerConfig
from .hfconfig import common_refusals, config_refusals, refuse, setting, special_ids, token_ids_for_hf
from .namemap import AS_IS, TRANSPOSE, Row

MODEL_TYPE = "llama"
PREFIX = "model."                       # what LlamaForCausalLM puts before every name but lm_head
ARCHITECTURE = "LlamaForCausalLM"

# one row per Hugging Face tensor ({i}: block number; names without the "model." prefix)
#   their name, our parameter(s), what happens on the way in (undone on the way out), only if
TABLE = [
    Row("embed_tokens.weight",                      "embed.weight",                     AS_IS),
    Row("layers.{i}.input_layernorm.weight",        "layers.{i}.norm1.weight",          AS_IS),
    Row("layers.{i}.self_attn.q_proj.weight",       "layers.{i}.self_attn.w_q.weight",  TRANSPOSE),
    Row("layers.{i}.self_attn.q_proj.bias",         "layers.{i}.self_attn.w_q.bias",    AS_IS, "bias"),
    Row("layers.{i}.self_attn.k_proj.weight",       "layers.{i}.self_attn.w_k.weight",  TRANSPOSE),
    Row("layers.{i}.self_attn.k_proj.bias",         "layers.{i}.self_attn.w_k.bias",    AS_IS, "bias"),
    Row("layers.{i}.self_attn.v_proj.weight",       "layers.{i}.self_attn.w_v.weight",  TRANSPOSE),
    Row("layers.{i}.self_attn.v_proj.bias",         "layers.{i}.self_attn.w_v.bias",    AS_IS, "bias"),
    Row("layers.{i}.self_attn.o_proj.weight",       "layers.{i}.self_attn.w_o.weight",  TRANSPOSE),
    Row("layers.{i}.self_attn.o_proj.bias",         "layers.{i}.self_attn.w_o.bias",    AS_IS, "bias"),
    Row("layers.{i}.post_attention_layernorm.weight", "layers.{i}.norm2.weight",        AS_IS),
    Row("layers.{i}.mlp.gate_proj.weight",          "layers.{i}.ff.linear1.weight",     TRANSPOSE),
    Row("layers.{i}.mlp.gate_proj.bias",            "layers.{i}.ff.linear1.bias",       AS_IS, "bias"),
    Row("layers.{i}.mlp.up_proj.weight",            "layers.{i}.ff.linear3.weight",     TRANSPOSE),
    Row("layers.{i}.mlp.up_proj.bias",              "layers.{i}.ff.linear3.bias",       AS_IS, "bias"),
    Row("layers.{i}.mlp.down_proj.weight",          "layers.{i}.ff.linear2.weight",     TRANSPOSE),
    Row("layers.{i}.mlp.down_proj.bias",            "layers.{i}.ff.linear2.bias",       AS_IS, "bias"),
    Row("norm.weight",                              "norm.weight",                      AS_IS),
    Row("lm_head.weight",                           "out_proj.weight",                  TRANSPOSE, "untied"),
]
# tensors some (older) files hold that are not parameters: the rotary inverse frequencies
BUFFERS = (r"layers\.\d+\.self_attn\.rotary_emb\.inv_freq",)

# what transformers' LlamaConfig assumes for a key config.json leaves out
DEFAULTS = dict(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                num_attention_heads=32, num_key_value_heads=None, head_dim=None, hidden_act="silu",
                max_position_embeddings=2048, rms_norm_eps=1e-6, tie_word_embeddings=False,
                rope_theta=10000.0, rope_parameters=None, rope_scaling=None, attention_bias=False,
                mlp_bias=False, pad_token_id=None, bos_token_id=1, eos_token_id=2)


def rope_refusals(hf: dict) -> list[str]:
    """Rotary variants this model does not compute: any rope_type but "default" (linear,
    dynamic, yarn, llama3 scaling...), and rotating only part of each head."""
    reasons = []
    scaling = setting(hf, "rope_scaling", DEFAULTS)
    parameters = setting(hf, "rope_parameters", DEFAULTS) or {}
    for key, value in (("rope_scaling", scaling), ("rope_parameters", parameters)):
        kind = (value or {}).get("rope_type", (value or {}).get("type", "default"))
        if kind != "default":
            reasons.append(f"{key} of type {kind!r} (only plain RoPE, rope_type 'default', is computed here)")
    if parameters.get("partial_rotary_factor", 1.0) != 1.0:
        reasons.append(f"partial_rotary_factor {parameters['partial_rotary_factor']} (every head "
                       f"dimension is rotated here)")
    return reasons


def rope_theta(hf: dict) -> float:
    """RoPE's base: ``rope_parameters["rope_theta"]`` (transformers 5), else the top-level
    ``rope_theta`` (older files), else transformers' 10000."""
    parameters = setting(hf, "rope_parameters", DEFAULTS) or {}
    return parameters.get("rope_theta", setting(hf, "rope_theta", DEFAULTS))


def config_from_hf(hf: dict) -> TransformerConfig:
    """Our TransformerConfig from LLaMA's config.json (already parsed), or a PretrainedError
    naming everything it says that this model does not compute."""
    def get(key):
        return setting(hf, key, DEFAULTS)

    d_model, n_heads = get("hidden_size"), get("num_attention_heads")
    reasons = common_refusals(hf) + rope_refusals(hf)
    if get("hidden_act") != "silu":
        reasons.append(f"hidden_act {get('hidden_act')!r} (the SwiGLU feed-forward here uses 'silu')")
    if get("attention_bias") != get("mlp_bias"):
        reasons.append(f"attention_bias={get('attention_bias')} with mlp_bias={get('mlp_bias')} (here "
                       f"one switch, bias, covers attention and feed-forward)")
    if get("head_dim") is not None and get("head_dim") * n_heads != d_model:
        reasons.append(f"head_dim {get('head_dim')} with hidden_size {d_model} and {n_heads} heads "
                       f"(here head_dim = hidden_size / num_attention_heads)")
    refuse(MODEL_TYPE, reasons)
    return TransformerConfig(
        vocab_size=get("vocab_size"), d_model=d_model, n_heads=n_heads, n_kv_heads=get("num_key_value_heads"),
        d_ff=get("intermediate_size"), n_encoder_layers=0, n_decoder_layers=get("num_hidden_layers"),
        max_len=get("max_position_embeddings"), norm_first=True, activation="swiglu", positional="rope",
        rope_base=rope_theta(hf), norm="rmsnorm", norm_eps=get("rms_norm_eps"), bias=get("attention_bias"),
        head_bias=False, embed_scale=False, tie_embeddings=get("tie_word_embeddings"),
        **special_ids(hf, DEFAULTS))


def refusals(config: TransformerConfig) -> list[str]:
    """Why a model with this config (rotary positions) has no LLaMA equivalent; empty if it has one."""
    reasons = config_refusals(config)
    if config.norm != "rmsnorm":
        reasons.append(f"norm {config.norm!r} (LLaMA uses 'rmsnorm')")
    if config.activation != "swiglu":
        reasons.append(f"activation {config.activation!r} (LLaMA uses 'swiglu')")
    return reasons


def hf_config(config: TransformerConfig) -> dict:
    """LLaMA's config.json for a config that ``refusals`` accepts. RoPE's base goes both in
    ``rope_parameters`` (transformers 5) and at the top level (older versions read that)."""
    return dict(
        architectures=[ARCHITECTURE], model_type=MODEL_TYPE, vocab_size=config.vocab_size,
        hidden_size=config.d_model, intermediate_size=config.d_ff, num_hidden_layers=config.n_decoder_layers,
        num_attention_heads=config.n_heads, num_key_value_heads=config.kv_heads,
        head_dim=config.d_model // config.n_heads, hidden_act="silu", max_position_embeddings=config.max_len,
        rms_norm_eps=config.norm_eps, rope_theta=config.rope_base,
        rope_parameters=dict(rope_type="default", rope_theta=config.rope_base),
        attention_bias=config.bias, mlp_bias=config.bias, attention_dropout=config.dropout,
        tie_word_embeddings=config.tie_embeddings, **token_ids_for_hf(config))
