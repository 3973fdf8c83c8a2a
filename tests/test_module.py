"""What every Module does: the parameter tree, gradient accumulation, modes, saving, casting, printing.

Legend: B batch, T time, D d_model, F d_ff (D != F so a transposed shape cannot pass).
"""

import numpy as np
import pytest

from tinytransformer.nn import (GELU, CrossEntropyLoss, Dropout, Embedding, FeedForward, LayerNorm,
                                LearnedPositionalEmbedding, Linear, Module, MultiHeadAttention, ReLU,
                                ScaledDotProductAttention, SinusoidalPositionalEncoding, Softmax)
from tinytransformer.nn.module import default_rng

B, T, D, F, V = 2, 3, 4, 6, 7


class Stack(Module):
    """embed -> pos -> layers[0] -> drop -> layers[1] -> norm: a tree with a list of children."""

    def __init__(self, rng=None, dtype=np.float32):
        super().__init__()
        rng = default_rng(rng)          # a composite: one Generator for every child
        self.embed = Embedding(V, D, rng=rng, dtype=dtype)
        self.pos = SinusoidalPositionalEncoding(D, max_len=10, dtype=dtype)
        self.layers = [Linear(D, F, rng=rng, dtype=dtype), Linear(F, D, rng=rng, dtype=dtype)]
        self.drop = Dropout(0.5, rng=rng)
        self.norm = LayerNorm(D, dtype=dtype)

    def forward(self, ids):
        h = self.layers[0](self.pos(self.embed(ids)))
        return self.norm(self.layers[1](self.drop(h)))

    def backward(self, dy):
        dh = self.drop.backward(self.layers[1].backward(self.norm.backward(dy)))
        self.embed.backward(self.pos.backward(self.layers[0].backward(dh)))


STACK_NAMES = ["embed.weight", "layers.0.weight", "layers.0.bias",
               "layers.1.weight", "layers.1.bias", "norm.weight", "norm.bias"]


def test_named_parameters_gives_dotted_names_through_lists_of_children():
    model = Stack()
    assert [name for name, _, _ in model.named_parameters()] == STACK_NAMES


def test_named_parameters_yields_the_modules_own_param_and_grad_arrays():
    model = Stack()
    named = {name: (p, g) for name, p, g in model.named_parameters()}
    assert named["layers.1.weight"][0] is model.layers[1].params["weight"]
    assert named["layers.1.weight"][1] is model.layers[1].grads["weight"]
    assert named["norm.bias"][0] is model.norm.params["bias"]


def test_deeper_trees_name_every_level():
    names = [name for name, _, _ in MultiHeadAttention(D, 2).named_parameters()]
    assert names == [f"{w}.{p}" for w in ("w_q", "w_k", "w_v", "w_o") for p in ("weight", "bias")]


def test_parameters_lists_the_same_arrays_in_order():
    model = Stack()
    assert [id(p) for p in model.parameters()] == [id(p) for _, p, _ in model.named_parameters()]
    assert model.num_parameters() == V * D + (D * F + F) + (F * D + D) + 2 * D


def test_zero_grad_clears_every_gradient_in_place(rng):
    model = Stack()
    grads = [g for _, _, g in model.named_parameters()]
    for g in grads:
        g[...] = rng.standard_normal(g.shape)
    model.zero_grad()
    assert [id(g) for _, _, g in model.named_parameters()] == [id(g) for g in grads]
    assert all(not g.any() for g in grads)


def _accumulating_cases():
    ids = np.array([[1, 3, 1], [0, 3, 3]])
    x = lambda rng: rng.standard_normal((B, T, D))                      # noqa: E731
    return {
        "Linear": (lambda rng: Linear(D, F, rng=rng, dtype=np.float64), x),
        "Embedding": (lambda rng: Embedding(V, D, rng=rng, dtype=np.float64), lambda rng: ids),
        "LearnedPositionalEmbedding": (lambda rng: LearnedPositionalEmbedding(5, D, rng=rng,
                                                                           dtype=np.float64), x),
        "LayerNorm": (lambda rng: LayerNorm(D, dtype=np.float64), x),
        "FeedForward": (lambda rng: FeedForward(D, F, rng=rng, dtype=np.float64), x),
        "MultiHeadAttention": (lambda rng: MultiHeadAttention(D, 2, rng=rng, dtype=np.float64), x),
        "Stack": (lambda rng: Stack(rng=rng, dtype=np.float64), lambda rng: ids),
    }


@pytest.mark.parametrize("case", list(_accumulating_cases()))
def test_backward_twice_after_one_forward_accumulates_exactly_twice(case, rng):
    make_module, make_input = _accumulating_cases()[case]
    module = make_module(rng)
    out = module(make_input(rng))
    dout = rng.standard_normal(out.shape)
    module.backward(dout)
    once = {name: g.copy() for name, _, g in module.named_parameters()}
    assert any(g.any() for g in once.values())
    module.backward(dout)
    for name, _, g in module.named_parameters():
        # not bit-exact: the second embedding gradient is added onto the first, rounding differently
        np.testing.assert_allclose(g, 2 * once[name], rtol=1e-12, atol=0, err_msg=name)


def test_train_and_eval_reach_every_descendant_and_return_self(rng):
    model = Stack(rng=rng)
    assert model.eval() is model
    assert all(not m.training for _, m in model.named_modules())
    assert model.train() is model
    assert all(m.training for _, m in model.named_modules())


def test_eval_makes_a_nested_dropout_the_identity(rng):
    model = Stack(rng=rng)
    ids = np.array([[1, 2, 3], [4, 5, 6]])
    model.eval()
    first, second = model(ids), model(ids)
    np.testing.assert_array_equal(first, second)
    model.train()
    assert not np.array_equal(model(ids), model(ids))      # fresh masks each call


def test_state_dict_round_trips_into_another_model():
    source, target = Stack(rng=np.random.default_rng(1)), Stack(rng=np.random.default_rng(2))
    state = source.state_dict()
    assert list(state) == STACK_NAMES
    before = {name: p for name, p, _ in target.named_parameters()}
    target.load_state_dict(state)
    for name, p, _ in target.named_parameters():
        assert p is before[name]                            # loaded in place
        np.testing.assert_array_equal(p, state[name])


def test_state_dict_is_a_copy():
    model = Stack()
    state = model.state_dict()
    state["norm.weight"][...] = 5.0
    assert np.all(model.norm.params["weight"] == 1.0)


def test_load_state_dict_names_a_missing_key():
    state = Stack().state_dict()
    del state["layers.1.bias"]
    with pytest.raises(KeyError, match=r"missing layers\.1\.bias; unexpected nothing"):
        Stack().load_state_dict(state)


def test_load_state_dict_names_an_unexpected_key():
    state = Stack().state_dict()
    state["head.weight"] = np.zeros((D, V))
    with pytest.raises(KeyError, match=r"missing nothing; unexpected head\.weight"):
        Stack().load_state_dict(state)


def test_load_state_dict_names_a_misshaped_entry():
    state = Stack().state_dict()
    state["layers.0.weight"] = state["layers.0.weight"].T          # (F, D) instead of (D, F)
    with pytest.raises(ValueError, match=r"'layers\.0\.weight' has shape \(6, 4\)"):
        Stack().load_state_dict(state)


def _fresh_layers():
    rng = np.random.default_rng(0)
    return [Linear(D, F, rng=rng), Embedding(V, D, rng=rng), SinusoidalPositionalEncoding(D, 8),
            LearnedPositionalEmbedding(8, D, rng=rng), ReLU(), GELU(), GELU("tanh"), Softmax(),
            LayerNorm(D), Dropout(0.2, rng=rng), FeedForward(D, F, rng=rng), CrossEntropyLoss(),
            ScaledDotProductAttention(), MultiHeadAttention(D, 2, rng=rng), Stack(rng=rng)]


@pytest.mark.parametrize("layer", _fresh_layers(), ids=lambda m: type(m).__name__)
def test_backward_before_forward_raises_runtime_error(layer):
    with pytest.raises(RuntimeError, match="before forward"):
        if isinstance(layer, CrossEntropyLoss):
            layer.backward()
        else:
            layer.backward(np.ones((B, T, D), dtype=np.float32))


def test_astype_casts_params_grads_and_buffers_in_place_and_returns_self():
    model = Stack()
    weights32 = model.layers[0].params["weight"].copy()
    assert model.astype(np.float64) is model
    assert model.dtype == np.float64
    for _, m in model.named_modules():
        for store in (m.params, m.grads, m.buffers):
            assert all(a.dtype == np.float64 for a in store.values())
    assert model.pos.buffers["pe"].dtype == np.float64
    np.testing.assert_array_equal(model.layers[0].params["weight"], weights32.astype(np.float64))


def test_astype_drops_stale_caches():
    model = Linear(D, F, rng=np.random.default_rng(0))
    model(np.ones((B, D), np.float32))
    model.astype(np.float64)
    with pytest.raises(RuntimeError, match="before forward"):
        model.backward(np.ones((B, F)))


class TiedSame(Module):
    """second(first(x)) where both Linears hold the very same weight and grad arrays."""

    def __init__(self, dtype=np.float32):
        super().__init__()
        self.first = Linear(D, D, rng=np.random.default_rng(3), dtype=dtype)
        self.second = Linear(D, D, rng=np.random.default_rng(4), dtype=dtype)
        self.second.params["weight"] = self.first.params["weight"]
        self.second.grads["weight"] = self.first.grads["weight"]

    def forward(self, x):
        return self.second(self.first(x))

    def backward(self, dy):
        return self.first.backward(self.second.backward(dy))


class TiedTranspose(Module):
    """up: D -> F, then down: F -> D whose weight and grad are views (.T) of up's."""

    def __init__(self, dtype=np.float32):
        super().__init__()
        self.up = Linear(D, F, rng=np.random.default_rng(3), dtype=dtype)
        self.down = Linear(F, D, rng=np.random.default_rng(4), dtype=dtype)
        self.down.params["weight"] = self.up.params["weight"].T
        self.down.grads["weight"] = self.up.grads["weight"].T

    def forward(self, x):
        hidden = np.tanh(self.up(x))
        self.cache = hidden
        return self.down(hidden)

    def backward(self, dy):
        hidden = self._saved()
        return self.up.backward(self.down.backward(dy) * (1 - hidden * hidden))


def test_a_shared_parameter_is_listed_once():
    assert [n for n, _, _ in TiedSame().named_parameters()] == ["first.weight", "first.bias", "second.bias"]
    assert [n for n, _, _ in TiedTranspose().named_parameters()] == ["up.weight", "up.bias", "down.bias"]
    assert TiedTranspose().num_parameters() == D * F + F + D


def test_astype_keeps_a_shared_array_one_object():
    model = TiedSame().astype(np.float64)
    assert model.second.params["weight"] is model.first.params["weight"]
    assert model.second.grads["weight"] is model.first.grads["weight"]
    assert model.first.params["weight"].dtype == np.float64


def test_astype_keeps_transposed_views_tied():
    model = TiedTranspose().astype(np.float64)
    up_w, down_w = model.up.params["weight"], model.down.params["weight"]
    assert down_w.dtype == up_w.dtype == np.float64
    np.testing.assert_array_equal(down_w, up_w.T)
    up_w[1, 2] = 42.0
    assert down_w[2, 1] == 42.0, "down.weight no longer sees up.weight after astype"
    model.up.grads["weight"][0, 5] = 7.0
    assert model.down.grads["weight"][5, 0] == 7.0, "down's grad no longer sees up's grad after astype"


@pytest.mark.parametrize("tied", [TiedSame, TiedTranspose])
def test_a_tied_weight_gets_both_gradient_contributions_after_astype(tied, rng, assert_gradcheck):
    model = tied().astype(np.float64)
    first, second = [m for _, m in model.named_modules()][1:]
    assert np.shares_memory(first.params["weight"], second.params["weight"])
    # with the tie intact, perturbing the one listed weight moves both uses, so the check
    # passes only if both backward contributions land in its one gradient
    assert_gradcheck(model, rng.standard_normal((B, T, D)))


def test_summary_shows_names_shapes_and_total():
    model = Stack()
    text = model.summary()
    for name in ("embed: Embedding", "pos: SinusoidalPositionalEncoding", "norm: LayerNorm",
                 "Linear(4, 6, bias=True)", "Linear(6, 4, bias=True)", "Dropout(p=0.5)"):
        assert name in text
    assert "weight: (4, 6) float32" in text and "weight: (6, 4) float32" in text
    assert "weight: (7, 4) float32" in text
    assert f"Total parameters: {model.num_parameters():,}" in text
    assert repr(model) == text


def test_load_state_dict_of_another_model_lists_a_few_names_and_a_count():
    from tinytransformer.nn import Linear
    with pytest.raises(KeyError, match=r"missing embed\.weight, layers\.0\.bias, layers\.0\.weight, layers\.1\.bias and 3 more; unexpected bias, weight"):
        Stack().load_state_dict(Linear(D, V, rng=np.random.default_rng(0)).state_dict())


def test_add_grad_accumulates_and_skips_a_frozen_parameter_without_computing_it():
    from tinytransformer.nn import Linear
    layer = Linear(3, 2, rng=np.random.default_rng(0), dtype=np.float64)
    x, dy = np.random.default_rng(1).standard_normal((4, 3)), np.random.default_rng(2).standard_normal((4, 2))
    layer(x)
    layer.backward(dy)
    layer.backward(dy)                                   # a second contribution adds to the first
    np.testing.assert_allclose(layer.grads["weight"], 2 * x.T @ dy)
    layer.zero_grad()
    layer.frozen.add("weight")
    asked = []
    layer.add_grad("weight", lambda: asked.append(1))    # the thunk is never called
    layer.backward(dy)
    assert asked == [] and not layer.grads["weight"].any()
    np.testing.assert_allclose(layer.grads["bias"], dy.sum(0))


def test_caches_are_named_for_a_learner_to_inspect():
    from tinytransformer.nn import LayerNorm, Linear, MultiHeadAttention
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 4)).astype(np.float32)
    linear, norm = Linear(4, 5, rng=rng), LayerNorm(4)
    linear(x)
    norm(x)
    assert linear.cache.x is x
    assert norm.cache._fields == ("xhat", "rstd") and norm.cache.rstd.shape == (2, 3, 1)
    mha = MultiHeadAttention(4, 2, rng=rng)
    mha(x)
    assert mha.cache.self_attention is True
    assert mha.attention.cache._fields == ("q", "k", "v", "attn", "dropped")
