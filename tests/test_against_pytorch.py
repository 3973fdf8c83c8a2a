"""The whole model against an independent definition: torch.nn.Transformer, when PyTorch is installed.

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

from tinytransformer.gradcheck import _padded_ids
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
    src = _padded_ids(rng, (3, 6), V, [6, 4, 2])
    tgt = _padded_ids(rng, (3, 5), V, [5, 2, 4])
    labels = _padded_ids(rng, (3, 5), V, [5, 2, 4])
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
