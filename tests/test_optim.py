"""Optimizers against their update formulas written out by hand, schedules, clipping."""

import json
import math

import numpy as np
import pytest

from tinytransformer import optim as optim_module
from tinytransformer.nn import Linear, Module
from tinytransformer.nn.functional import BLOCK, in_blocks_reference
from tinytransformer.optim import (SGD, Adam, AdamW, clip_grad_norm, constant, cosine, get_schedule,
                                   grad_norm, warmup_inverse_sqrt)


class Tiny(Module):
    """Two Linear layers (4 parameters of different shapes)."""

    def __init__(self, seed=0, dtype=np.float64):
        super().__init__()
        rng = np.random.default_rng(seed)
        self.first = Linear(3, 5, rng=rng, dtype=dtype)
        self.second = Linear(5, 2, rng=rng, dtype=dtype)
        self.second.params["bias"][...] = rng.standard_normal(2)     # not all zeros


def set_grads(model, rng):
    """Fill every gradient with fresh random numbers; return them by name (float64 copies)."""
    grads = {}
    for name, _, grad in model.named_parameters():
        grad[...] = rng.standard_normal(grad.shape)
        grads[name] = grad.astype(np.float64)
    return grads


def params_of(model):
    return {name: p.astype(np.float64) for name, p, _ in model.named_parameters()}


def run(model, opt, steps, seed=1, lrs=None):
    """``steps`` updates with random gradients; returns the gradients used, per step."""
    rng = np.random.default_rng(seed)
    used = []
    for k in range(steps):
        if lrs is not None:
            opt.lr = lrs[k]
        used.append(set_grads(model, rng))
        opt.step()
    return used


# ---- the update formulas ------------------------------------------------------------------


def test_sgd_plain():
    model = Tiny()
    before = params_of(model)
    grads = run(model, SGD(model, lr=0.1), 1)[0]
    for name, p, _ in model.named_parameters():
        np.testing.assert_allclose(p, before[name] - 0.1 * grads[name], rtol=1e-14, atol=1e-15)


def test_sgd_momentum_and_weight_decay_by_hand():
    model = Tiny()
    p = params_of(model)
    lr, mu, wd = 0.05, 0.9, 0.01
    grads = run(model, SGD(model, lr=lr, momentum=mu, weight_decay=wd), 4)
    buf = {n: np.zeros_like(v) for n, v in p.items()}
    for g in grads:
        for n in p:
            d = g[n] + wd * p[n]
            buf[n] = mu * buf[n] + d
            p[n] = p[n] - lr * buf[n]
    for name, param, _ in model.named_parameters():
        np.testing.assert_allclose(param, p[name], rtol=1e-13, atol=1e-15)


def adam_by_hand(p, grads, lr, betas, eps, wd=0.0, decoupled=False, lrs=None):
    """The textbook Adam/AdamW on float64 dicts, t counted per step."""
    b1, b2 = betas
    m = {n: np.zeros_like(v) for n, v in p.items()}
    v = {n: np.zeros_like(x) for n, x in p.items()}
    p = dict(p)
    for t, g in enumerate(grads, start=1):
        step_lr = lrs[t - 1] if lrs is not None else lr
        for n in p:
            gn = g[n]
            if decoupled:
                p[n] = p[n] - step_lr * wd * p[n]
            else:
                gn = gn + wd * p[n]
            m[n] = b1 * m[n] + (1 - b1) * gn
            v[n] = b2 * v[n] + (1 - b2) * gn ** 2
            m_hat = m[n] / (1 - b1 ** t)
            v_hat = v[n] / (1 - b2 ** t)
            p[n] = p[n] - step_lr * m_hat / (np.sqrt(v_hat) + eps)
    return p


# eps = 1e-3 is large enough that putting it inside the bias correction (or leaving the
# correction out) changes the result far beyond the tolerance
@pytest.mark.parametrize("cls, wd, decoupled", [(Adam, 0.0, False), (Adam, 0.1, False),
                                                (AdamW, 0.1, True)])
def test_adam_family_by_hand(cls, wd, decoupled):
    model = Tiny()
    start = params_of(model)
    kw = dict(lr=0.01, betas=(0.8, 0.95), eps=1e-3)
    opt = cls(model, weight_decay=wd, **kw)
    grads = run(model, opt, 5)
    want = adam_by_hand(start, grads, wd=wd, decoupled=decoupled, **kw)
    for name, param, _ in model.named_parameters():
        np.testing.assert_allclose(param, want[name], rtol=1e-12, atol=1e-14)
    assert opt.step_count == 5


def test_adam_and_adamw_decay_differ():
    """The same weight decay, in the gradient (Adam) or on the weights (AdamW), differs."""
    a, b = Tiny(), Tiny()
    run(a, Adam(a, lr=0.01, weight_decay=0.1), 3)
    run(b, AdamW(b, lr=0.01, weight_decay=0.1), 3)
    assert not np.allclose(a.first.params["weight"], b.first.params["weight"], rtol=1e-6)


def test_defaults():
    model = Tiny()
    adam, adamw = Adam(model), AdamW(model)
    assert (adam.lr, adam.betas, adam.eps, adam.weight_decay) == (1e-3, (0.9, 0.98), 1e-9, 0.0)
    assert (adamw.lr, adamw.betas, adamw.eps, adamw.weight_decay) == (1e-3, (0.9, 0.98), 1e-9, 0.01)
    sgd = SGD(model, lr=0.1)
    assert (sgd.momentum, sgd.weight_decay) == (0.0, 0.0)


def test_step_count_is_per_step_and_lr_changes_take_effect():
    model = Tiny()
    start = params_of(model)
    opt = Adam(model, lr=0.01, betas=(0.8, 0.95), eps=1e-3)
    lrs = [0.01, 0.05, 0.002]
    grads = run(model, opt, 3, lrs=lrs)
    assert opt.step_count == 3                     # 3 steps, 4 parameters: not 12
    want = adam_by_hand(start, grads, 0.01, (0.8, 0.95), 1e-3, lrs=lrs)
    for name, param, _ in model.named_parameters():
        np.testing.assert_allclose(param, want[name], rtol=1e-12, atol=1e-14)
    # the same run at a constant lr ends elsewhere
    other = adam_by_hand(start, grads, 0.01, (0.8, 0.95), 1e-3)
    assert not np.allclose(other["first.weight"], want["first.weight"])


def test_updates_are_in_place():
    model = Tiny(dtype=np.float32)
    arrays = [p for p in model.parameters()]
    for opt in (SGD(model, lr=0.1, momentum=0.9, weight_decay=0.1), Adam(model, weight_decay=0.1),
                AdamW(model)):
        run(model, opt, 2)
    assert all(a is b for a, b in zip(arrays, model.parameters()))


# ---- tied parameters, dtype, a changed model ----------------------------------------------


class Tied(Module):
    """Three modules over one (3, 3) matrix: ``a`` owns it, ``b`` shares the array, ``c``
    holds its transpose (a view), as tied embeddings do. One gradient buffer for all."""

    def __init__(self):
        super().__init__()
        rng = np.random.default_rng(0)
        self.a = Linear(3, 3, bias=False, rng=rng, dtype=np.float64)
        self.b = Linear(3, 3, bias=False, rng=rng, dtype=np.float64)
        self.c = Linear(3, 3, bias=False, rng=rng, dtype=np.float64)
        self.b.params["weight"] = self.a.params["weight"]
        self.b.grads["weight"] = self.a.grads["weight"]
        self.c.params["weight"] = self.a.params["weight"].T
        self.c.grads["weight"] = self.a.grads["weight"].T


@pytest.mark.parametrize("make_opt", [lambda m: SGD(m, lr=0.1), lambda m: Adam(m, lr=0.1)])
def test_tied_parameters_updated_once_and_stay_tied(make_opt):
    model = Tied()
    opt = make_opt(model)
    assert opt.names == ["a.weight"]
    w0 = model.a.params["weight"].copy()
    g = np.random.default_rng(1).standard_normal((3, 3))
    model.a.grads["weight"][...] = g
    opt.step()
    w = model.a.params["weight"]
    # one update: SGD moves by lr * g, Adam's first step by lr * sign(g) (|m_hat| = sqrt(v_hat))
    step = g if isinstance(opt, SGD) else np.sign(g)
    np.testing.assert_allclose(w, w0 - 0.1 * step, rtol=1e-7)
    assert model.b.params["weight"] is w
    assert np.shares_memory(model.c.params["weight"], w)
    np.testing.assert_array_equal(model.c.params["weight"], w.T)


@pytest.mark.parametrize("make_opt", [lambda m: SGD(m, lr=0.1, momentum=0.9, weight_decay=0.01),
                                      lambda m: Adam(m, lr=np.float64(1e-3), weight_decay=0.01),
                                      lambda m: AdamW(m, lr=1e-3)])
def test_float32_stays_float32(make_opt):
    model = Tiny(dtype=np.float32)
    opt = make_opt(model)
    run(model, opt, 3)
    for _, p, g in model.named_parameters():
        assert p.dtype == np.float32 and g.dtype == np.float32
    for bufs in opt.buffers.values():
        assert all(b.dtype == np.float32 for b in bufs)
    for arrays in opt.state_dict()["buffers"].values():
        assert all(a.dtype == np.float32 for a in arrays.values())


class Large(Module):
    """One parameter larger than the optimizers' update block (75000 numbers, not a multiple of it)."""

    def __init__(self):
        super().__init__()
        self.layer = Linear(300, 250, rng=np.random.default_rng(0), dtype=np.float32)


@pytest.mark.parametrize("make_opt", [lambda m: SGD(m, lr=0.1, momentum=0.9, weight_decay=0.01),
                                      lambda m: Adam(m, lr=0.01, weight_decay=0.1),
                                      lambda m: AdamW(m, lr=0.01, weight_decay=0.1)])
def test_a_parameter_updated_in_blocks_gets_the_numbers_of_the_whole_update(make_opt, monkeypatch):
    assert Large().layer.params["weight"].size > BLOCK
    blocked = Large()
    run(blocked, make_opt(blocked), 3)
    monkeypatch.setattr(optim_module, "in_blocks", in_blocks_reference)    # the formula on the whole
    whole = Large()
    run(whole, make_opt(whole), 3)
    for (name, got, _), (_, want, _) in zip(blocked.named_parameters(), whole.named_parameters()):
        np.testing.assert_array_equal(got, want, err_msg=name)


def test_float32_adam_matches_float64_formula():
    model = Tiny(dtype=np.float32)
    start = params_of(model)
    grads = run(model, Adam(model, lr=0.01), 4)
    want = adam_by_hand(start, grads, 0.01, (0.9, 0.98), 1e-9)
    for name, param, _ in model.named_parameters():
        np.testing.assert_allclose(param, want[name], rtol=2e-5, atol=1e-6)


def test_casting_the_model_after_building_the_optimizer_is_an_error():
    model = Tiny(dtype=np.float32)
    opt = Adam(model)
    model.astype(np.float64)
    with pytest.raises(RuntimeError, match="build the optimizer after casting"):
        opt.step()


# ---- state_dict ---------------------------------------------------------------------------


@pytest.mark.parametrize("make_opt", [lambda m: SGD(m, lr=0.05, momentum=0.9, weight_decay=0.01),
                                      lambda m: Adam(m, lr=0.01, weight_decay=0.01),
                                      lambda m: AdamW(m, lr=0.01)])
def test_state_dict_round_trip_continues_identically(make_opt, tmp_path):
    model = Tiny(dtype=np.float32)
    opt = make_opt(model)
    run(model, opt, 3, seed=1)
    state = opt.state_dict()
    # a checkpoint without pickle: numbers as JSON, arrays in an .npz
    numbers = json.loads(json.dumps({k: v for k, v in state.items() if k != "buffers"}))
    np.savez(tmp_path / "opt.npz", **{f"{kind}/{name}": a for kind, arrays in state["buffers"].items()
                                      for name, a in arrays.items()})
    with np.load(tmp_path / "opt.npz") as npz:
        buffers = {}
        for key in npz.files:
            kind, name = key.split("/", 1)
            buffers.setdefault(kind, {})[name] = npz[key]
    restored_model = Tiny(seed=99, dtype=np.float32)
    restored_model.load_state_dict(model.state_dict())
    restored = make_opt(restored_model)
    restored.lr = 123.0                                 # overwritten by the state
    restored.load_state_dict({**numbers, "buffers": buffers})
    assert restored.step_count == 3 and restored.lr == opt.lr
    run(model, opt, 2, seed=2)
    run(restored_model, restored, 2, seed=2)
    for (_, p, _), (_, q, _) in zip(model.named_parameters(), restored_model.named_parameters()):
        np.testing.assert_array_equal(p, q)
    assert restored.step_count == opt.step_count == 5


def test_state_dict_is_a_copy():
    model = Tiny()
    opt = Adam(model)
    run(model, opt, 1)
    state = opt.state_dict()
    saved = state["buffers"]["exp_avg"]["first.weight"].copy()
    run(model, opt, 1)
    np.testing.assert_array_equal(state["buffers"]["exp_avg"]["first.weight"], saved)
    assert sorted(state["buffers"]["exp_avg"]) == ["first.bias", "first.weight",
                                                   "second.bias", "second.weight"]


def test_load_state_dict_errors_change_nothing():
    model = Tiny()
    opt = Adam(model)
    run(model, opt, 2)
    good = opt.state_dict()
    fresh = Adam(Tiny())

    with pytest.raises(ValueError, match="state is of a SGD optimizer, this is Adam"):
        fresh.load_state_dict(SGD(Tiny(), lr=0.1).state_dict())
    with pytest.raises(ValueError, match="AdamW optimizer, this is Adam"):
        fresh.load_state_dict(AdamW(Tiny()).state_dict())
    bad = opt.state_dict()
    del bad["buffers"]["exp_avg"]["second.bias"]
    with pytest.raises(KeyError, match=r"missing \['second.bias'\]"):
        fresh.load_state_dict(bad)
    bad = opt.state_dict()
    bad["buffers"]["exp_avg_sq"]["first.weight"] = np.zeros((5, 3))
    with pytest.raises(ValueError, match=r"'exp_avg_sq' of 'first.weight' has shape \(5, 3\)"):
        fresh.load_state_dict(bad)
    bad = opt.state_dict()
    bad["buffers"]["momentum_buffer"] = {}
    with pytest.raises(ValueError, match="keeps buffers"):
        fresh.load_state_dict(bad)
    assert fresh.step_count == 0 and not fresh.buffers["exp_avg"][0].any()   # untouched
    fresh.load_state_dict(good)
    assert fresh.step_count == 2


def test_sgd_momentum_buffer_follows_the_hyperparameters():
    model = Tiny()
    plain = SGD(model, lr=0.1)
    assert plain.state_dict()["buffers"] == {}
    heavy = SGD(model, lr=0.1, momentum=0.9)
    run(model, heavy, 1)
    plain.load_state_dict(heavy.state_dict())          # momentum comes with its buffer
    assert plain.momentum == 0.9 and "momentum_buffer" in plain.buffers


# ---- schedules ----------------------------------------------------------------------------


def test_reference_schedule_values():
    lr = lambda step: warmup_inverse_sqrt(step, peak_lr=2e-3, warmup=100)   # noqa: E731
    assert lr(0) == 0.0                                 # no update yet
    assert lr(1) == pytest.approx(2e-5, rel=1e-12)      # 2e-3 * 1/100
    assert lr(50) == pytest.approx(1e-3, rel=1e-12)     # halfway up the warmup
    assert lr(100) == pytest.approx(2e-3, rel=1e-12)    # the peak
    assert lr(400) == pytest.approx(1e-3, rel=1e-12)    # 2e-3 * sqrt(100/400)
    assert lr(10_000) == pytest.approx(2e-4, rel=1e-12)
    assert get_schedule("inverse_sqrt", peak_lr=2e-3, warmup=100)(400) == lr(400)


def test_constant_and_cosine():
    assert constant(0, 0.1) == constant(7, 0.1) == 0.1
    assert constant(5, 0.1, warmup=10) == pytest.approx(0.05)
    assert constant(10, 0.1, warmup=10) == 0.1
    kw = dict(peak_lr=1.0, total_steps=110, warmup=10, min_lr=0.1)
    assert cosine(0, **kw) == 0.0
    assert cosine(5, **kw) == pytest.approx(0.5)
    assert cosine(10, **kw) == pytest.approx(1.0)
    assert cosine(60, **kw) == pytest.approx(0.55)      # halfway down: (1 + 0.1) / 2
    assert cosine(110, **kw) == cosine(500, **kw) == pytest.approx(0.1)
    assert cosine(35, **kw) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 4)))


def test_schedule_errors():
    with pytest.raises(ValueError, match="step: expected an integer >= 0"):
        warmup_inverse_sqrt(-1, 2e-3, 100)
    with pytest.raises(ValueError, match="warmup"):
        warmup_inverse_sqrt(5, 2e-3, 0)
    with pytest.raises(ValueError, match="warmup < total_steps"):
        cosine(5, 1.0, total_steps=10, warmup=10)
    with pytest.raises(ValueError, match="known schedules are inverse_sqrt, constant, cosine"):
        get_schedule("linear")
    with pytest.raises(TypeError, match="schedule 'cosine'"):
        get_schedule("cosine", peak_lr=1.0)             # total_steps missing


# ---- gradient norm and clipping -----------------------------------------------------------


def test_clip_grad_norm_scales_to_exactly_max_norm():
    model = Tiny()
    grads = set_grads(model, np.random.default_rng(3))
    by_hand = math.sqrt(sum(float((g ** 2).sum()) for g in grads.values()))
    assert grad_norm(model) == pytest.approx(by_hand, rel=1e-12)
    returned = clip_grad_norm(model, max_norm=0.5)
    assert returned == pytest.approx(by_hand, rel=1e-12)      # the norm before clipping
    assert grad_norm(model) == pytest.approx(0.5, rel=1e-12)
    for name, _, g in model.named_parameters():               # same direction
        np.testing.assert_allclose(g, grads[name] * 0.5 / by_hand, rtol=1e-12)


def test_clip_grad_norm_leaves_small_gradients_alone():
    model = Tiny()
    grads = set_grads(model, np.random.default_rng(3))
    norm = clip_grad_norm(model, max_norm=1e6)
    assert norm == pytest.approx(grad_norm(model))
    for name, _, g in model.named_parameters():
        np.testing.assert_array_equal(g, grads[name])


def test_grad_norm_counts_tied_parameters_once():
    model = Tied()
    model.a.grads["weight"][...] = 2.0                # 9 entries of 2: norm 6
    assert grad_norm(model) == pytest.approx(6.0)
    assert clip_grad_norm(model, 3.0) == pytest.approx(6.0)
    np.testing.assert_allclose(model.b.grads["weight"], 1.0)


def test_grad_norm_float32_and_non_finite():
    model = Tiny(dtype=np.float32)
    for _, _, g in model.named_parameters():
        g[...] = 1e30                                  # squares overflow float32; the norm must not
    assert grad_norm(model) == pytest.approx(1e30 * math.sqrt(15 + 5 + 10 + 2), rel=1e-6)
    model.first.grads["bias"][1] = np.nan
    with pytest.raises(FloatingPointError, match="'first.bias' is not finite"):
        clip_grad_norm(model, 1.0)
    with pytest.raises(ValueError, match="max_norm"):
        clip_grad_norm(Tiny(), 0.0)


def test_constructor_errors():
    with pytest.raises(TypeError, match="Module"):
        Adam([np.zeros(3)])
    with pytest.raises(ValueError, match="betas"):
        Adam(Tiny(), betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="lr: expected a number >= 0"):
        SGD(Tiny(), lr=-0.1)


# ---- optional: the same numbers as PyTorch ------------------------------------------------


@pytest.mark.parametrize("name, wd", [("Adam", 0.0), ("Adam", 0.05), ("AdamW", 0.05),
                                      ("SGD", 0.05)])
def test_matches_torch_optim(name, wd):
    torch = pytest.importorskip("torch")
    model = Tiny()
    tensors = [torch.tensor(p.copy(), requires_grad=True) for p in model.parameters()]
    if name == "SGD":
        ours = SGD(model, lr=0.05, momentum=0.9, weight_decay=wd)
        theirs = torch.optim.SGD(tensors, lr=0.05, momentum=0.9, weight_decay=wd)
    else:
        kw = dict(lr=0.01, betas=(0.9, 0.98), eps=1e-9, weight_decay=wd)
        ours = {"Adam": Adam, "AdamW": AdamW}[name](model, **kw)
        theirs = getattr(torch.optim, name)(tensors, **kw)
    rng = np.random.default_rng(5)
    for _ in range(6):
        for t, (_, _, g) in zip(tensors, model.named_parameters()):
            g[...] = rng.standard_normal(g.shape)
            t.grad = torch.tensor(g.copy())
        ours.step()
        theirs.step()
    for t, p in zip(tensors, model.parameters()):
        np.testing.assert_allclose(p, t.detach().numpy(), rtol=1e-10, atol=1e-12)
