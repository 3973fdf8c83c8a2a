"""The whole model against an independent definition: torch.nn.Transformer, when PyTorch is installed;
the modern parts (RMSNorm, SiLU, SwiGLU, RoPE, ALiBi) against PyTorch or definitions written in it.

Gradient checks prove that each backward matches its forward; they cannot tell whether the
forward is the standard Transformer. Here the same weights go into torch.nn.Transformer
(float64, batch_first, the same pre-LN or post-LN arrangement), the embeddings, sinusoidal
positions and output projection are applied around it by hand, and the logits, the loss
(label smoothing, ignored padding) and every compared parameter gradient must agree.
A NumPy-only test pins the embedding/position/output path of a model without layers.
"""

import math

import numpy as np
import pytest

from tinytransformer.gradcheck import padded_ids
from tinytransformer.nn import CrossEntropyLoss
from tinytransformer.nn.transformer import Transformer, TransformerConfig

V, D, H, F = 13, 16, 4, 24


def model_and_batch(norm_first, tie, activation):
    config = TransformerConfig(vocab_size=V, d_model=D, n_heads=H, d_ff=F, max_len=12,
                               norm_first=norm_first, tie_embeddings=tie, activation=activation)
    rng = np.random.default_rng(3)
    model = Transformer(config, rng).astype(np.float64)
    for name, p, _ in model.named_parameters():      # non-trivial LayerNorms and biases
        if name.endswith("bias") or "norm" in name:
            p[...] = 0.3 * rng.standard_normal(p.shape)
    src = padded_ids(rng, (3, 6), V, [6, 4, 2])
    tgt = padded_ids(rng, (3, 5), V, [5, 2, 4])
    labels = padded_ids(rng, (3, 5), V, [5, 2, 4])
    return model, src, tgt, labels


# torch warns that its pre-LN encoder cannot use its nested-tensor fast path: not our concern
@pytest.mark.filterwarnings("ignore:enable_nested_tensor is True:UserWarning")
@pytest.mark.parametrize("norm_first, tie, activation",
                         [(True, False, "relu"), (False, False, "relu"), (True, True, "gelu"), (False, True, "relu")])
def test_logits_loss_and_gradients_equal_torch_nn_transformer(norm_first, tie, activation):
    torch = pytest.importorskip("torch")
    model, src, tgt, labels = model_and_batch(norm_first, tie, activation)
    P = {name: p for name, p, _ in model.named_parameters()}
    T = torch.tensor

    ref = torch.nn.Transformer(d_model=D, nhead=H, num_encoder_layers=2, num_decoder_layers=2,
                               dim_feedforward=F, dropout=0.0, activation=activation,
                               batch_first=True, norm_first=norm_first).double()

    def attention(torch_mha, name):      # torch keeps (out, in) weights and q, k, v stacked
        torch_mha.in_proj_weight.data = T(np.concatenate([P[f"{name}.w_{c}.weight"].T for c in "qkv"]))
        torch_mha.in_proj_bias.data = T(np.concatenate([P[f"{name}.w_{c}.bias"] for c in "qkv"]))
        torch_mha.out_proj.weight.data = T(P[f"{name}.w_o.weight"].T.copy())
        torch_mha.out_proj.bias.data = T(P[f"{name}.w_o.bias"])

    def linear(torch_linear, name):
        torch_linear.weight.data = T(P[f"{name}.weight"].T.copy())
        torch_linear.bias.data = T(P[f"{name}.bias"])

    def norm(torch_norm, name):
        torch_norm.weight.data, torch_norm.bias.data = T(P[f"{name}.weight"]), T(P[f"{name}.bias"])

    for i, layer in enumerate(ref.encoder.layers):
        name = f"encoder.layers.{i}"
        attention(layer.self_attn, f"{name}.self_attn")
        linear(layer.linear1, f"{name}.ff.linear1"), linear(layer.linear2, f"{name}.ff.linear2")
        norm(layer.norm1, f"{name}.norm1"), norm(layer.norm2, f"{name}.norm2")
    for i, layer in enumerate(ref.decoder.layers):
        name = f"decoder.layers.{i}"
        attention(layer.self_attn, f"{name}.self_attn"), attention(layer.multihead_attn, f"{name}.cross_attn")
        linear(layer.linear1, f"{name}.ff.linear1"), linear(layer.linear2, f"{name}.ff.linear2")
        for k in (1, 2, 3):
            norm(getattr(layer, f"norm{k}"), f"{name}.norm{k}")
    if norm_first:
        norm(ref.encoder.norm, "encoder.norm"), norm(ref.decoder.norm, "decoder.norm")
    else:                                           # the paper's post-LN stacks end without a norm
        ref.encoder.norm = ref.decoder.norm = None

    E_tgt = T(P["tgt_embed.weight"].copy()).requires_grad_()
    E_src = E_tgt if tie else T(P["src_embed.weight"].copy()).requires_grad_()
    W_out = E_tgt.T if tie else T(P["out_proj.weight"].copy()).requires_grad_()
    b_out = T(P["out_proj.bias"].copy()).requires_grad_()
    pe = T(model.pos.buffers["pe"])
    h = ref(E_src[T(src)] * math.sqrt(D) + pe[:src.shape[1]],
            E_tgt[T(tgt)] * math.sqrt(D) + pe[:tgt.shape[1]],
            tgt_mask=torch.triu(torch.ones(5, 5, dtype=torch.bool), 1),     # torch: True = masked
            src_key_padding_mask=T(src == 0), tgt_key_padding_mask=T(tgt == 0),
            memory_key_padding_mask=T(src == 0))
    ref_logits = h @ W_out + b_out
    ref_loss = torch.nn.functional.cross_entropy(ref_logits.reshape(-1, V), T(labels).reshape(-1),
                                                 ignore_index=0, label_smoothing=0.1)
    ref_loss.backward()

    crit = CrossEntropyLoss(ignore_index=0, label_smoothing=0.1)
    model.zero_grad()
    logits = model(src, tgt)
    loss = crit(logits, labels)
    model.backward(crit.backward())
    G = {name: g for name, _, g in model.named_parameters()}

    real = tgt != 0                          # torch's rows at padded queries differ (it masks them)
    np.testing.assert_allclose(logits[real], ref_logits.detach().numpy()[real], rtol=0, atol=1e-12)
    assert abs(loss - ref_loss.item()) < 1e-12
    np.testing.assert_allclose(G["tgt_embed.weight"], E_tgt.grad.numpy(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(G["out_proj.bias"], b_out.grad.numpy(), rtol=0, atol=1e-12)
    if not tie:
        np.testing.assert_allclose(G["src_embed.weight"], E_src.grad.numpy(), rtol=0, atol=1e-12)
        np.testing.assert_allclose(G["out_proj.weight"], W_out.grad.numpy(), rtol=0, atol=1e-12)
    for i, layer in enumerate(ref.encoder.layers):
        np.testing.assert_allclose(G[f"encoder.layers.{i}.self_attn.w_k.weight"],
                                   layer.self_attn.in_proj_weight.grad[D:2 * D].numpy().T, atol=1e-12)
        np.testing.assert_allclose(G[f"encoder.layers.{i}.ff.linear1.weight"],
                                   layer.linear1.weight.grad.numpy().T, atol=1e-12)
    for i, layer in enumerate(ref.decoder.layers):
        np.testing.assert_allclose(G[f"decoder.layers.{i}.cross_attn.w_v.weight"],
                                   layer.multihead_attn.in_proj_weight.grad[2 * D:].numpy().T, atol=1e-12)
        np.testing.assert_allclose(G[f"decoder.layers.{i}.self_attn.w_q.bias"],
                                   layer.self_attn.in_proj_bias.grad[:D].numpy(), atol=1e-12)
        np.testing.assert_allclose(G[f"decoder.layers.{i}.norm3.weight"],
                                   layer.norm3.weight.grad.numpy(), atol=1e-12)


def test_a_model_without_layers_is_embedding_times_sqrt_d_plus_positions_then_the_output():
    config = TransformerConfig(vocab_size=V, d_model=D, n_heads=H, d_ff=F, n_encoder_layers=0,
                               n_decoder_layers=0, norm_first=False, max_len=12)
    model = Transformer(config, np.random.default_rng(0), dtype=np.float64)
    _, _, tgt, _ = model_and_batch(True, False, "relu")
    position = np.arange(tgt.shape[1])[:, None]
    angle = position / 10000 ** (np.arange(0, D, 2) / D)
    pe = np.zeros((tgt.shape[1], D))
    pe[:, 0::2], pe[:, 1::2] = np.sin(angle), np.cos(angle)
    x = model.tgt_embed.params["weight"][tgt] * math.sqrt(D) + pe
    expected = x @ model.out_proj.params["weight"] + model.out_proj.params["bias"]
    np.testing.assert_allclose(model(tgt, tgt), expected, rtol=1e-12, atol=1e-12)


# ---- the modern parts against PyTorch's own (RMSNorm, SiLU) or the reference definitions
# written in PyTorch (the Hugging Face LLaMA's rotate-half RoPE, the ALiBi paper's slopes) ----

def torch_grads(torch, fn, *arrays, upstream):
    """fn's output on torch copies of ``arrays`` and the gradients of sum(out * upstream)."""
    leaves = [torch.tensor(a, requires_grad=True) for a in arrays]
    out = fn(*leaves)
    (out * torch.tensor(upstream)).sum().backward()
    return out.detach().numpy(), [leaf.grad.numpy() for leaf in leaves]


def test_rmsnorm_and_silu_equal_torch():
    torch = pytest.importorskip("torch")
    from tinytransformer.nn import RMSNorm, SiLU
    rng = np.random.default_rng(0)
    x, dy = 2.0 + rng.standard_normal((3, 5, D)), rng.standard_normal((3, 5, D))
    norm = RMSNorm(D, dtype=np.float64)
    norm.params["weight"][...] = rng.standard_normal(D)
    ref = torch.nn.RMSNorm(D, eps=1e-5).double()
    ref.weight.data = torch.tensor(norm.params["weight"])
    out, (dx,) = torch_grads(torch, lambda t: ref(t), x, upstream=dy)
    np.testing.assert_allclose(norm(x), out, rtol=0, atol=1e-13)
    np.testing.assert_allclose(norm.backward(dy), dx, rtol=0, atol=1e-12)
    np.testing.assert_allclose(norm.grads["weight"], ref.weight.grad.numpy(), rtol=0, atol=1e-12)
    silu = SiLU()
    out, (dx,) = torch_grads(torch, torch.nn.functional.silu, 4 * x, upstream=dy)
    np.testing.assert_allclose(silu(4 * x), out, rtol=0, atol=1e-13)
    np.testing.assert_allclose(silu.backward(dy), dx, rtol=0, atol=1e-13)


def test_swiglu_feedforward_equals_torch():
    torch = pytest.importorskip("torch")
    from tinytransformer.nn import FeedForward
    rng = np.random.default_rng(1)
    ff = FeedForward(D, F, "swiglu", rng=rng, dtype=np.float64)
    for _, p, _ in ff.named_parameters():
        p[...] = rng.standard_normal(p.shape)
    x, dy = rng.standard_normal((3, 5, D)), rng.standard_normal((3, 5, D))
    W = {name: torch.tensor(p, requires_grad=True) for name, p, _ in ff.named_parameters()}

    def swiglu(t):     # w2(silu(w1 x) * w3 x), torch's functional pieces
        linear = lambda k, z: z @ W[f"linear{k}.weight"] + W[f"linear{k}.bias"]   # noqa: E731
        return linear(2, torch.nn.functional.silu(linear(1, t)) * linear(3, t))
    out, (dx,) = torch_grads(torch, swiglu, x, upstream=dy)
    np.testing.assert_allclose(ff(x), out, rtol=0, atol=1e-12)
    np.testing.assert_allclose(ff.backward(dy), dx, rtol=0, atol=1e-11)
    for name, _, grad in ff.named_parameters():
        np.testing.assert_allclose(grad, W[name].grad.numpy(), rtol=0, atol=1e-11, err_msg=name)


def test_rope_equals_the_hugging_face_llama_rotate_half():
    torch = pytest.importorskip("torch")
    from tinytransformer.nn import RotaryEmbedding
    dk, T, offset, base = 8, 6, 3, 500.0
    rng = np.random.default_rng(2)
    x, dy = rng.standard_normal((2, 3, T, dk)), rng.standard_normal((2, 3, T, dk))

    def llama_rope(t):      # transformers' LlamaRotaryEmbedding + apply_rotary_pos_emb, in float64
        inv_freq = 1.0 / (base ** (torch.arange(0, dk, 2, dtype=torch.float64) / dk))
        freqs = torch.outer(torch.arange(offset, offset + T, dtype=torch.float64), inv_freq)
        emb = torch.cat((freqs, freqs), dim=-1)
        rotate_half = torch.cat((-t[..., dk // 2:], t[..., :dk // 2]), dim=-1)
        return t * emb.cos() + rotate_half * emb.sin()
    out, (dx,) = torch_grads(torch, llama_rope, x, upstream=dy)
    rope = RotaryEmbedding(dk, max_len=16, base=base, dtype=np.float64)
    np.testing.assert_allclose(rope(x, offset), out, rtol=0, atol=1e-13)
    np.testing.assert_allclose(rope.backward(dy), dx, rtol=0, atol=1e-13)


def test_alibi_attention_equals_torch_sdpa_with_the_papers_bias():
    torch = pytest.importorskip("torch")
    from tinytransformer.nn import ALiBiBias, ScaledDotProductAttention
    H, Tq, Tk, dk = 4, 3, 5, 6            # a decoding step: 3 new queries after 2 cached keys
    rng = np.random.default_rng(3)
    q, k, v = (rng.standard_normal((2, H, n, dk)) for n in (Tq, Tk, Tk))
    dy = rng.standard_normal((2, H, Tq, dk))
    mask = np.tri(Tq, Tk, Tk - Tq, dtype=bool)                     # causal, queries last

    def papers_slopes(n):   # get_slopes_power_of_2 of the ALiBi reference code
        start = 2 ** (-2 ** -(math.log2(n) - 3))
        return [start * start ** i for i in range(n)]
    i, j = torch.arange(Tk - Tq, Tk)[:, None], torch.arange(Tk)
    bias = -torch.tensor(papers_slopes(H), dtype=torch.float64)[:, None, None] * (i - j)
    bias = bias.masked_fill(~torch.tensor(mask), -math.inf)
    sdpa = lambda a, b, c: torch.nn.functional.scaled_dot_product_attention(a, b, c, attn_mask=bias)  # noqa: E731
    out, grads = torch_grads(torch, sdpa, q, k, v, upstream=dy)
    ours = ScaledDotProductAttention(alibi=ALiBiBias(H))
    np.testing.assert_allclose(ours(q, k, v, mask), out, rtol=0, atol=1e-13)
    for name, mine, theirs in zip("qkv", ours.backward(dy), grads):
        np.testing.assert_allclose(mine, theirs, rtol=0, atol=1e-12, err_msg=name)


# ---- what GPT-2 and LLaMA need: grouped-query attention, no biases, tanh GELU, the norms' eps ----

@pytest.mark.parametrize("positional", [None, "rope", "alibi"])
def test_grouped_query_attention_equals_torch_sdpa_with_repeated_key_value_heads(positional):
    """Hugging Face LLaMA's attention: k and v of Hkv heads (rotated first with RoPE), repeated
    g = H / Hkv times as repeat_interleave(g, dim=1), then scaled_dot_product_attention."""
    torch = pytest.importorskip("torch")
    from tinytransformer.nn import MultiHeadAttention
    H, Hkv, dk, T = 8, 2, 6, 5
    D, g = H * dk, H // Hkv
    rng = np.random.default_rng(4)
    mha = MultiHeadAttention(D, H, rng=rng, dtype=np.float64, positional=positional, max_len=9,
                             n_kv_heads=Hkv, bias=positional != "rope")    # LLaMA's has no bias
    for _, p, _ in mha.named_parameters():
        p[...] = rng.standard_normal(p.shape) / math.sqrt(D)
    x, dy = rng.standard_normal((3, T, D)), rng.standard_normal((3, T, D))
    mask = np.tri(T, dtype=bool) & (np.arange(T) < np.array([5, 3, 4])[:, None])[:, None, None, :]
    W = {name: torch.tensor(p, requires_grad=True) for name, p, _ in mha.named_parameters()}
    allowed = torch.tensor(mask)                                   # torch's bool mask: True = attend
    if positional == "alibi":
        i, j = torch.arange(T)[:, None], torch.arange(T)
        slopes = torch.tensor([2.0 ** (-8 * (h + 1) / H) for h in range(H)], dtype=torch.float64)
        allowed = (-slopes[:, None, None] * (i - j)).masked_fill(~allowed, -math.inf)

    def rotate(t):          # transformers' apply_rotary_pos_emb on (B, heads, T, dk)
        inv_freq = 1.0 / (10000.0 ** (torch.arange(0, dk, 2, dtype=torch.float64) / dk))
        emb = torch.cat([torch.outer(torch.arange(T, dtype=torch.float64), inv_freq)] * 2, dim=-1)
        return t * emb.cos() + torch.cat((-t[..., dk // 2:], t[..., :dk // 2]), dim=-1) * emb.sin()

    def attention(t):
        def project(name, heads):     # (B, T, D) -> (B, heads, T, dk)
            y = t @ W[f"{name}.weight"] + (W[f"{name}.bias"] if f"{name}.bias" in W else 0)
            return y.reshape(3, T, heads, dk).transpose(1, 2)
        q, k, v = project("w_q", H), project("w_k", Hkv), project("w_v", Hkv)
        if positional == "rope":
            q, k = rotate(q), rotate(k)
        k, v = k.repeat_interleave(g, dim=1), v.repeat_interleave(g, dim=1)
        heads = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
        out = heads.transpose(1, 2).reshape(3, T, D) @ W["w_o.weight"]
        return out + W["w_o.bias"] if "w_o.bias" in W else out
    out, (dx,) = torch_grads(torch, attention, x, upstream=dy)
    np.testing.assert_allclose(mha(x, mask=mask), out, rtol=0, atol=1e-12)
    np.testing.assert_allclose(mha.backward(dy), dx, rtol=0, atol=1e-12)
    for name, _, grad in mha.named_parameters():
        np.testing.assert_allclose(grad, W[name].grad.numpy(), rtol=0, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("activation", ["gelu_tanh", "swiglu"])
def test_feedforward_without_bias_equals_torch(activation):
    """GPT-2's MLP (tanh GELU; here without its biases) and LLaMA's (SwiGLU, no bias)."""
    torch = pytest.importorskip("torch")
    from tinytransformer.nn import FeedForward
    rng = np.random.default_rng(5)
    ff = FeedForward(D, F, activation, rng=rng, dtype=np.float64, bias=False)
    x, dy = rng.standard_normal((3, 5, D)), rng.standard_normal((3, 5, D))
    W = {name: torch.tensor(p, requires_grad=True) for name, p, _ in ff.named_parameters()}
    functional = torch.nn.functional

    def mlp(t):
        if activation == "swiglu":
            return (functional.silu(t @ W["linear1.weight"]) * (t @ W["linear3.weight"])) @ W["linear2.weight"]
        return functional.gelu(t @ W["linear1.weight"], approximate="tanh") @ W["linear2.weight"]
    out, (dx,) = torch_grads(torch, mlp, x, upstream=dy)
    np.testing.assert_allclose(ff(x), out, rtol=0, atol=1e-12)
    np.testing.assert_allclose(ff.backward(dy), dx, rtol=0, atol=1e-12)
    for name, _, grad in ff.named_parameters():
        np.testing.assert_allclose(grad, W[name].grad.numpy(), rtol=0, atol=1e-11, err_msg=name)


@pytest.mark.parametrize("norm, eps", [("layernorm", 1e-5), ("rmsnorm", 1e-6)])
def test_the_models_norms_with_the_configs_eps_equal_torch(norm, eps):
    """GPT-2's LayerNorm(eps 1e-5) and LLaMA's RMSNorm(eps 1e-6), as the model builds them."""
    torch = pytest.importorskip("torch")
    from tinytransformer.nn.transformer import DecoderOnlyTransformer
    config = TransformerConfig(vocab_size=V, d_model=D, n_heads=H, d_ff=F, norm=norm, norm_eps=eps)
    mine = DecoderOnlyTransformer(config, np.random.default_rng(0), dtype=np.float64).norm
    ref = (torch.nn.LayerNorm(D, eps=eps) if norm == "layernorm" else torch.nn.RMSNorm(D, eps=eps)).double()
    x = 0.01 * np.random.default_rng(6).standard_normal((3, D))    # small: a wrong eps would show
    np.testing.assert_allclose(mine(x), ref(torch.tensor(x)).detach().numpy(), rtol=0, atol=1e-12)
