"""LoRALinear, add_lora and merge_lora: the math, its gradient, what is frozen, merging.

Legend: B batch, T time, I in_features, O out_features, R rank (all distinct).
"""

import numpy as np
import pytest

from tinytransformer import (Adam, CrossEntropyLoss, DecoderOnlyTransformer, Linear, LoRALinear,
                             Transformer, TransformerConfig, add_lora, merge_lora)
from tinytransformer.nn.lora import lora_settings
from tinytransformer.train_config import LORA_ALPHA, LORA_TARGETS

B, T, I, O, R = 2, 3, 5, 7, 3
f64 = np.float64


def lora_layer(rng, alpha=None, bias=True):
    layer = LoRALinear(Linear(I, O, bias=bias, rng=rng, dtype=f64), R, alpha, rng=rng)
    for name, p, _ in layer.named_parameters():
        if name != "lora_a":                 # B nonzero, so the adapter's path is exercised
            p[...] = rng.standard_normal(p.shape)
    return layer


def tiny_config(**overrides):
    return TransformerConfig(**{"vocab_size": 11, "d_model": 8, "n_heads": 2, "d_ff": 12,
                                "n_encoder_layers": 1, "n_decoder_layers": 2, "max_len": 9,
                                **overrides})


def test_forward_is_x_w_plus_b_plus_scaled_low_rank_product(rng):
    layer = lora_layer(rng, alpha=6.0)
    x = rng.standard_normal((B, T, I))
    p = layer.params
    expected = x @ p["weight"] + p["bias"] + (6.0 / R) * (x @ p["lora_a"]) @ p["lora_b"]
    np.testing.assert_allclose(layer(x), expected, rtol=1e-12)


def test_a_new_adapter_starts_as_the_base_layer_and_shares_its_arrays(rng):
    base = Linear(I, O, rng=rng, dtype=f64)
    layer = LoRALinear(base, R, rng=rng)
    assert layer.params["weight"] is base.params["weight"] and layer.params["bias"] is base.params["bias"]
    assert not layer.params["lora_b"].any() and layer.params["lora_a"].std() > 0
    assert layer.params["lora_a"].shape == (I, R) and layer.params["lora_b"].shape == (R, O)
    assert layer.scaling == 1.0                                   # alpha None means alpha = rank
    limit = np.sqrt(6.0 / (I + R))                                # like a Linear(I, R) weight
    assert np.abs(layer.params["lora_a"]).max() <= limit
    x = rng.standard_normal((B, T, I))
    np.testing.assert_array_equal(layer(x), base(x))
    assert [n for n, _, _ in layer.trainable_parameters()] == ["lora_a", "lora_b"]


@pytest.mark.parametrize("alpha, bias", [(None, True), (2.0, False)])
def test_gradcheck_every_input_and_parameter(alpha, bias, rng, assert_gradcheck):
    layer = lora_layer(rng, alpha, bias).requires_grad_(True)
    result = assert_gradcheck(layer, rng.standard_normal((B, T, I)))
    names = ["input 0", "param weight"] + (["param bias"] if bias else []) + ["param lora_a", "param lora_b"]
    assert [c.name for c in result.checks] == names


def test_the_frozen_base_gets_no_gradient_and_the_adapters_the_checked_one(rng):
    frozen, free = lora_layer(np.random.default_rng(3)), lora_layer(np.random.default_rng(3))
    free.requires_grad_(True)
    x, dy = rng.standard_normal((B, T, I)), rng.standard_normal((B, T, O))
    for layer in (frozen, free):
        layer(x)
    np.testing.assert_array_equal(frozen.backward(dy), free.backward(dy))
    assert not frozen.grads["weight"].any() and not frozen.grads["bias"].any()
    for name in ("lora_a", "lora_b"):
        np.testing.assert_array_equal(frozen.grads[name], free.grads[name])


@pytest.mark.parametrize("rank", [0, 6, 2.0, True])
def test_a_rank_outside_one_to_min_in_out_is_refused(rank, rng):
    with pytest.raises(ValueError, match=rf"rank: expected an integer from 1 to min\(in_features, "
                                         rf"out_features\) = 5 for a Linear\(5, 7\), got {rank!r}"):
        LoRALinear(Linear(I, O, rng=rng), rank)


def test_alpha_must_be_positive(rng):
    with pytest.raises(ValueError, match=r"alpha: expected a number > 0 \(or None for alpha = rank\), got 0"):
        LoRALinear(Linear(I, O, rng=rng), R, alpha=0)


def test_add_lora_wraps_the_query_and_value_projections_and_freezes_the_rest():
    model = Transformer(tiny_config(), rng=np.random.default_rng(0))
    before = [name for name, _, _ in model.named_parameters()]
    assert add_lora(model, 2, rng=np.random.default_rng(1)) is model
    names = [name for name, _, _ in model.named_parameters()]
    assert [n for n in names if "lora" not in n] == before      # base names unchanged
    trainable = [name for name, _, _ in model.trainable_parameters()]
    attentions = ["encoder.layers.0.self_attn"] + [f"decoder.layers.{i}.{kind}" for i in range(2)
                                                   for kind in ("self_attn", "cross_attn")]
    assert trainable == [f"{a}.{w}.lora_{m}" for a in attentions for w in ("w_q", "w_v") for m in "ab"]
    assert model.num_parameters(trainable_only=True) == len(attentions) * 2 * 2 * (8 + 8)
    assert isinstance(model.encoder.layers[0].self_attn.w_k, Linear)
    with pytest.raises(ValueError, match="already has LoRA adapters"):
        add_lora(model, 2)


def test_add_lora_refuses_targets_that_name_no_linear_and_a_rank_too_large():
    model = Transformer(tiny_config(), rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"targets: expected attribute names of Linear layers .* "
                                         r"got \('w_x',\), which name none"):
        add_lora(model, 2, targets=("w_x",))
    with pytest.raises(ValueError, match=r"= 8 for a Linear\(8, 8\), got 9"):
        add_lora(model, 9)
    with pytest.raises(ValueError, match="shares its weight with another layer"):
        add_lora(Transformer(tiny_config(tie_embeddings=True)), 2, targets=("out_proj",))


@pytest.mark.parametrize("cls", [Transformer, DecoderOnlyTransformer])
def test_merged_and_unmerged_give_the_same_outputs(cls, rng):
    model = cls(tiny_config(), rng=np.random.default_rng(0)).astype(f64)
    add_lora(model, 3, alpha=5.0, targets=("w_q", "w_v", "linear1"), rng=np.random.default_rng(1))
    for _, p, _ in model.trainable_parameters():
        p[...] = rng.standard_normal(p.shape)            # trained adapters: nonzero B
    ids = rng.integers(3, 11, (2, 6))
    inputs = (ids, rng.integers(3, 11, (2, 4))) if cls is Transformer else (ids,)
    adapted = model(*inputs)
    names = [n for n, _, _ in merge_lora(model).named_parameters()]
    assert not any("lora" in n for n in names)
    assert not any(isinstance(m, LoRALinear) for _, m in model.named_modules())
    np.testing.assert_allclose(model(*inputs), adapted, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="has no LoRA adapters"):
        merge_lora(model)


def test_a_lora_model_trains_only_its_adapters():
    model = add_lora(Transformer(tiny_config(), rng=np.random.default_rng(0)), 2,
                     rng=np.random.default_rng(1))
    before = model.state_dict()
    opt, crit, rng = Adam(model, lr=1e-2), CrossEntropyLoss(), np.random.default_rng(2)
    for _ in range(2):
        model.zero_grad()
        crit(model(rng.integers(3, 11, (3, 5)), rng.integers(3, 11, (3, 4))), rng.integers(3, 11, (3, 4)))
        model.backward(crit.backward())
        opt.step()
    for name, p, _ in model.named_parameters():
        assert np.array_equal(p, before[name]) != ("lora" in name), name


def test_gradcheck_of_a_frozen_base_compares_only_the_trainable_parameters(rng, assert_gradcheck):
    result = assert_gradcheck(lora_layer(rng), rng.standard_normal((B, T, I)))
    assert [c.name for c in result.checks] == ["input 0", "param lora_a", "param lora_b"]


@pytest.mark.parametrize("activation", ["relu", "swiglu"])
def test_gradcheck_of_a_model_with_the_command_lines_adapters_on_every_projection(activation, rng,
                                                                                  assert_gradcheck):
    model = Transformer(tiny_config(activation=activation), rng=np.random.default_rng(0)).astype(f64)
    add_lora(model, 2, LORA_ALPHA, LORA_TARGETS, rng=np.random.default_rng(1))
    for _, p, _ in model.trainable_parameters():
        p[...] = rng.standard_normal(p.shape) * 0.1      # trained adapters: nonzero B
    feed_forward = ["linear1", "linear2"] + (["linear3"] if activation == "swiglu" else [])
    assert lora_settings(model)["targets"] == sorted(["w_q", "w_k", "w_v", "w_o", *feed_forward])
    src, tgt = rng.integers(3, 11, (2, 6)), rng.integers(3, 11, (2, 4))
    src[1, 4:] = 0                                       # padding: masks matter
    result = assert_gradcheck(model, src, tgt, max_elements=20)
    assert len(result.checks) == len(list(model.trainable_parameters()))
