"""Freezing: requires_grad_, trainable_parameters, a backward that skips frozen work, and
optimizers and clipping that leave frozen parameters alone.

Legend: S source length, T target length (S != T), V vocabulary.
"""

import numpy as np
import pytest

from tinytransformer import (SGD, Adam, AdamW, CrossEntropyLoss, Linear, Transformer,
                             TransformerConfig, clip_grad_norm)
from tinytransformer.optim import grad_norm

S, T, V = 5, 4, 11


def small_model(seed=0, **overrides):
    config = TransformerConfig(**{"vocab_size": V, "d_model": 8, "n_heads": 2, "d_ff": 12,
                                  "n_encoder_layers": 1, "n_decoder_layers": 1, "max_len": 8,
                                  **overrides})
    return Transformer(config, rng=np.random.default_rng(seed))


def forward_backward(model, rng):
    src, tgt = rng.integers(3, V, (3, S)), rng.integers(3, V, (3, T))
    crit = CrossEntropyLoss()
    model.zero_grad()
    crit(model(src, tgt), rng.integers(3, V, (3, T)))
    model.backward(crit.backward())


def test_requires_grad_freezes_and_unfreezes_a_subtree():
    model = small_model()
    everything = [name for name, _, _ in model.named_parameters()]
    assert [name for name, _, _ in model.trainable_parameters()] == everything
    assert model.encoder.requires_grad_(False) is model.encoder
    trainable = [name for name, _, _ in model.trainable_parameters()]
    assert trainable == [n for n in everything if not n.startswith("encoder.")]
    assert model.num_parameters(trainable_only=True) == \
        model.num_parameters() - model.encoder.num_parameters()
    model.requires_grad_(True)
    assert [name for name, _, _ in model.trainable_parameters()] == everything
    with pytest.raises(TypeError, match="requires_grad: expected True or False, got 'no'"):
        model.requires_grad_("no")


def test_frozen_parameters_keep_zero_gradients_and_the_others_are_unchanged(rng):
    frozen_model, free_model = small_model(), small_model()
    frozen_model.decoder.requires_grad_(False)
    forward_backward(frozen_model, np.random.default_rng(5))
    forward_backward(free_model, np.random.default_rng(5))
    free = {name: grad for name, _, grad in free_model.named_parameters()}
    for name, _, grad in frozen_model.named_parameters():
        if name.startswith("decoder."):
            assert not grad.any(), name
        else:                          # freezing changes no other gradient
            np.testing.assert_array_equal(grad, free[name], err_msg=name)


def test_a_frozen_encoder_and_source_embedding_are_not_differentiated_at_all(rng):
    model = small_model()
    model.encoder.requires_grad_(False)
    model.src_embed.requires_grad_(False)
    calls = []
    model.encoder.backward = lambda dout: calls.append(dout)
    forward_backward(model, rng)
    assert calls == []
    assert model.tgt_embed.grads["weight"].any() and model.decoder.layers[0].ff.linear1.grads["weight"].any()


@pytest.mark.parametrize("positional", ["rope", "alibi", "none"])
def test_a_frozen_source_side_without_a_positional_module_still_trains_the_target_side(positional, rng):
    model = small_model(positional=positional)
    assert model.pos is None                             # positions are not added to the embeddings
    model.encoder.requires_grad_(False)
    model.src_embed.requires_grad_(False)
    forward_backward(model, rng)
    assert not model.src_embed.grads["weight"].any() and model.tgt_embed.grads["weight"].any()


@pytest.mark.parametrize("make", [lambda m: SGD(m, lr=0.1, momentum=0.9, weight_decay=0.1),
                                  lambda m: Adam(m, lr=0.1, weight_decay=0.1),
                                  lambda m: AdamW(m, lr=0.1)], ids=["sgd", "adam", "adamw"])
def test_optimizers_update_only_trainable_parameters(make, rng):
    model = small_model()
    model.encoder.requires_grad_(False)
    before = model.state_dict()
    opt = make(model)
    assert not any(name.startswith("encoder.") for name in opt.names)
    for _ in range(2):
        forward_backward(model, rng)
        opt.step()
    for name, param, _ in model.named_parameters():
        same = np.array_equal(param, before[name])
        assert same == name.startswith("encoder."), name
    assert not any(name.startswith("encoder.") for kind in opt.state_dict()["buffers"].values()
                   for name in kind)


def test_a_step_after_the_freezing_changed_is_refused(rng):
    model = small_model()
    opt = Adam(model)
    model.decoder.requires_grad_(False)
    with pytest.raises(RuntimeError, match="trainable parameters changed after the optimizer was built "
                                           r".*no longer trainable: 'decoder.layers.0.self_attn.w_q.weight'"):
        opt.step()


def test_clipping_measures_and_scales_only_trainable_gradients(rng):
    model = small_model()
    forward_backward(model, rng)
    model.encoder.requires_grad_(False)
    encoder_grads = {name: grad.copy() for name, _, grad in model.encoder.named_parameters()}
    expected = np.sqrt(sum((g.astype(np.float64) ** 2).sum() for _, _, g in model.trainable_parameters()))
    assert grad_norm(model) == pytest.approx(expected, rel=1e-5)
    assert clip_grad_norm(model, 1e-3) == pytest.approx(expected, rel=1e-5)
    assert grad_norm(model) == pytest.approx(1e-3, rel=1e-4)
    for name, _, grad in model.encoder.named_parameters():
        np.testing.assert_array_equal(grad, encoder_grads[name])


def test_a_linear_layer_frozen_alone_still_returns_its_input_gradient(rng):
    layer = Linear(4, 6, rng=rng, dtype=np.float64).requires_grad_(False)
    x, dy = rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 3, 6))
    layer(x)
    np.testing.assert_allclose(layer.backward(dy), dy @ layer.params["weight"].T)
    assert not layer.grads["weight"].any() and not layer.grads["bias"].any()
