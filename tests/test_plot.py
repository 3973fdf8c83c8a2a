"""Every plotting function draws, on small synthetic data, the panels it promises and writes files.

Colour bars are axes too: they are counted apart from the data axes
(matplotlib labels the axes it makes for a colour bar "<colorbar>").
"""

import numpy as np
import pytest
from matplotlib.figure import Figure

from tinytransformer import plot
from tinytransformer.gradcheck import gradcheck
from tinytransformer.nn import Linear
from tinytransformer.nn.attention import causal_mask, padding_mask
from tinytransformer.nn.embedding import sinusoidal_table

L, H, B = 2, 3, 2          # layers, heads, batch
T_SRC, T_TGT = 7, 5        # padded lengths; the token lists below are shorter


def counts(fig):
    """(data axes, colour-bar axes) of a figure."""
    colorbars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    return len(fig.axes) - len(colorbars), len(colorbars)


def attention(rng, shape):
    """Random attention weights: non-negative rows that sum to 1."""
    scores = rng.standard_normal(shape)
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    return weights / weights.sum(-1, keepdims=True)


def check_png(path):
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 1000


@pytest.fixture
def maps():
    rng = np.random.default_rng(0)
    out = {}
    for layer in range(L):
        out[f"encoder.layers.{layer}.self_attn"] = attention(rng, (B, H, T_SRC, T_SRC))
        out[f"decoder.layers.{layer}.self_attn"] = attention(rng, (B, H, T_TGT, T_TGT))
        out[f"decoder.layers.{layer}.cross_attn"] = attention(rng, (B, H, T_TGT, T_SRC))
    return out


SRC = ["3", "4", "5", "6", "7"]        # 5 real source tokens of 7
TGT = ["<bos>", "7", "6", "5"]         # 4 real decoder inputs of 5


@pytest.mark.parametrize("kind, n_rows, n_cols", [("encoder", 5, 5), ("decoder", 4, 4),
                                                  ("cross", 4, 5)])
def test_attention_grid(maps, tmp_path, kind, n_rows, n_cols):
    path = tmp_path / "sub" / f"{kind}.png"
    fig = plot.plot_attention_grid(maps, kind, src_tokens=SRC, tgt_tokens=TGT, example=1, save=path)
    assert isinstance(fig, Figure)
    assert counts(fig) == (L * H, 1)           # one cell per layer and head, one shared colour bar
    first = fig.axes[0]
    assert first.get_images()[0].get_array().shape == (n_rows, n_cols)   # padding cropped
    assert first.get_title() == "layer 0, head 0"
    assert [t.get_text() for t in first.get_yticklabels()] == (SRC if kind == "encoder" else TGT)
    check_png(path)


def test_attention_grid_decoder_only_and_errors(maps, tmp_path):
    rng = np.random.default_rng(1)
    only = {f"layers.{i}.self_attn": attention(rng, (1, H, 6, 6)) for i in range(L)}
    fig = plot.plot_attention_grid(only, "self", tgt_tokens=list("abcdef"))
    assert counts(fig) == (L * H, 1)
    with pytest.raises(ValueError, match="use kind='self'"):
        plot.plot_attention_grid(only, "decoder")
    with pytest.raises(ValueError, match="kind"):
        plot.plot_attention_grid(maps, "encoder-decoder")
    scores = {"encoder.layers.0.self_attn": rng.standard_normal((1, H, 4, 4)) * 5}
    with pytest.raises(ValueError, match="not the scores"):
        plot.plot_attention_grid(scores, "encoder")


def test_attention_head(tmp_path):
    attn = attention(np.random.default_rng(2), (4, 6))
    paths = [tmp_path / "head.png", tmp_path / "head.svg"]
    fig = plot.plot_attention_head(attn, list("abcd"), list("uvwxyz"), "one head", save=paths)
    assert counts(fig) == (1, 1)
    assert len(fig.axes[0].texts) == attn.size      # small enough: every weight written in its cell
    check_png(paths[0])
    assert paths[1].read_text().lstrip().startswith("<?xml") and "<svg" in paths[1].read_text()


def test_training_curves(tmp_path):
    rng = np.random.default_rng(3)
    steps = np.arange(1, 201)
    history = {
        "step": steps.tolist(),
        "loss": (2.0 * np.exp(-steps / 50) + 0.05 + 0.01 * rng.random(200)).tolist(),
        "lr": (1e-3 * np.minimum(steps / 20, np.sqrt(20 / steps))).tolist(),
        "grad_norm": (1 + rng.random(200)).tolist(),
        "eval": [{"step": s, "exact_match": s / 250, "token_accuracy": 0.2 + s / 250}
                 for s in (50, 100, 150, 200)],
        "target": 0.99,
    }
    fig = plot.plot_training_curves(history, save=tmp_path / "curves.png")
    assert counts(fig) == (4, 0)
    assert fig.axes[0].get_yscale() == "log"
    check_png(tmp_path / "curves.png")
    # with the worst length of each evaluation and the two-part stop rule
    for e in history["eval"]:
        e.update(worst=e["exact_match"] - 0.1, worst_length=16)
    history["eval"][-1].update(exact_match=0.996, worst=0.99)
    fig = plot.plot_training_curves({**history, "target": 0.995, "target_worst": 0.99})
    labels = [line.get_label() for line in fig.axes[2].get_lines()]
    assert "exact match at the worst length" in labels and "solved at step 200" in labels


def test_positional_encoding(tmp_path):
    fig = plot.plot_positional_encoding(sinusoidal_table(50, 32), save=tmp_path / "pe.png")
    assert counts(fig) == (2, 1)                  # the table and the curves; the table's colour bar
    assert fig.axes[0].get_images()[0].get_array().shape == (50, 32)
    check_png(tmp_path / "pe.png")


def test_masks(tmp_path):
    ids = np.array([[5, 6, 7, 0, 0], [5, 0, 0, 0, 0]])
    masks = {"causal": causal_mask(5), "padding": padding_mask(ids),
             "causal & padding": causal_mask(5) & padding_mask(ids)}
    fig = plot.plot_masks(masks, save=tmp_path / "masks.png")
    assert counts(fig) == (3, 0)
    padding = fig.axes[1].get_images()[0].get_array()
    assert padding.shape == (5, 5) and padding[:, 3:].max() == 0   # padded keys black in every row
    assert len(fig.legends) == 1
    check_png(tmp_path / "masks.png")


def test_gradcheck(tmp_path):
    rng = np.random.default_rng(4)
    results = [gradcheck(Linear(4, 3, rng=rng, dtype=np.float64), rng.standard_normal((2, 4)),
                         name=f"Linear(4, 3) #{i}") for i in range(2)]
    assert all(r.passed for r in results)
    fig = plot.plot_gradcheck(results, save=tmp_path / "gradcheck.png")
    assert counts(fig) == (1, 0)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    assert [t.get_text() for t in ax.get_yticklabels()] == [r.name for r in results]
    check_png(tmp_path / "gradcheck.png")


def test_length_generalisation(tmp_path):
    lengths = np.arange(1, 25)
    exact = np.where(lengths <= 16, 0.99, 0.1)
    fig = plot.plot_length_generalisation(lengths, exact, train_max_len=16,
                                          save=tmp_path / "length.png")
    assert counts(fig) == (1, 0)
    check_png(tmp_path / "length.png")


def test_save_rejects_unknown_suffix(tmp_path):
    with pytest.raises(ValueError, match=".png or .svg"):
        plot.plot_length_generalisation([1, 2], [1.0, 0.5], 1, save=tmp_path / "x.pdf")
    assert not (tmp_path / "x.pdf").exists()


def test_no_pyplot():
    """Plotting must not import pyplot (that would select a backend, global state)."""
    import subprocess
    import sys
    code = ("import sys, numpy as np; from tinytransformer import plot; "
            "plot.plot_masks({'causal': np.tril(np.ones((3, 3), bool))}); "
            "assert 'matplotlib.pyplot' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
