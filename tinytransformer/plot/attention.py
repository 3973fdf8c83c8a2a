"""Attention maps: every head of every layer of one kind, or one head large.

Legend: B batch, H heads, Tq query positions, Tk key positions.
"""

from __future__ import annotations

import re

import numpy as np
from matplotlib.figure import Figure

from .canvas import ATTENTION_CMAP, as_labels, new_figure, save_figure, token_ticks

# kind -> (key pattern, what it is, whose tokens are the queries, whose are the keys)
ATTENTION_KINDS = {
    "encoder": (r"encoder\.layers\.(\d+)\.self_attn", "Encoder self-attention", "source", "source"),
    "decoder": (r"decoder\.layers\.(\d+)\.self_attn", "Decoder self-attention (causal)",
                "target", "target"),
    "cross": (r"decoder\.layers\.(\d+)\.cross_attn", "Cross-attention (decoder reads encoder)",
              "target", "source"),
    "self": (r"layers\.(\d+)\.self_attn", "Self-attention (decoder-only, causal)",
             "target", "target"),
}


def _crop_length(length, tokens, full: int, name: str) -> int:
    """How many positions to keep: the given length, else the token count, else all."""
    if length is None:
        length = full if tokens is None else len(tokens)
    if not 1 <= length <= full:
        raise ValueError(f"{name}: {length} positions to show, but the maps have {full}")
    return int(length)


def _check_weights(name: str, attn: np.ndarray) -> None:
    if attn.size and (np.nanmin(attn) < -1e-6 or np.nanmax(attn) > 1 + 1e-6):
        raise ValueError(f"{name}: attention weights must lie in [0, 1] (rows of a softmax), got "
                         f"values in [{np.nanmin(attn):.3g}, {np.nanmax(attn):.3g}]; pass the "
                         f"weights (.attn), not the scores")


def plot_attention_grid(maps: dict, kind: str, src_tokens=None, tgt_tokens=None, example: int = 0,
                        title: str | None = None, save=None, src_len: int | None = None,
                        tgt_len: int | None = None) -> Figure:
    """Layers (rows) x heads (columns) of one kind of attention, for one example.

    ``maps``: dotted module name -> weights (B, H, Tq, Tk), as ``attention_maps()`` returns.
    ``kind``: "encoder" (``encoder.layers.<l>.self_attn``), "decoder"
    (``decoder.layers.<l>.self_attn``), "cross" (``decoder.layers.<l>.cross_attn``)
    or "self" (``layers.<l>.self_attn`` of a decoder-only model).
    Queries are on y, keys on x: source tokens for the encoder, target tokens
    (the decoder input, BOS first) for the decoder, target queries over source
    keys for cross-attention; a decoder-only model's sequence is passed as
    ``tgt_tokens``. Padding is cropped: ``src_len``/``tgt_len`` if given, else
    the lengths of the token lists.
    """
    if kind not in ATTENTION_KINDS:
        raise ValueError(f"kind: expected one of {sorted(ATTENTION_KINDS)}, got {kind!r}")
    pattern, what, q_side, k_side = ATTENTION_KINDS[kind]
    layers = {}
    for key, value in maps.items():
        match = re.fullmatch(pattern, key)
        if match:
            layers[int(match.group(1))] = np.asarray(value)
    if not layers:
        decoder_only = any(re.fullmatch(ATTENTION_KINDS["self"][0], key) for key in maps)
        hint = " (a decoder-only model's keys are 'layers.<l>.self_attn': use kind='self')" \
            if decoder_only else ""
        raise ValueError(f"maps: no key matches kind {kind!r}{hint}; keys are {sorted(maps)}")
    order = sorted(layers)
    shapes = {layers[l].shape for l in order}
    if len(shapes) != 1 or len(next(iter(shapes))) != 4:
        raise ValueError(f"maps: expected arrays (B, H, Tq, Tk) of one shape for kind {kind!r}, "
                         f"got shapes {sorted(shapes)}")
    B, H, Tq, Tk = next(iter(shapes))
    if not 0 <= example < B:
        raise ValueError(f"example: {example} out of range for batch size {B}")
    side = {"source": (src_tokens, src_len, "src"), "target": (tgt_tokens, tgt_len, "tgt")}
    if kind == "self" and tgt_tokens is None and tgt_len is None:
        side["target"] = (src_tokens, src_len, "src")
    q_tokens, q_len, q_name = side[q_side]
    k_tokens, k_len, k_name = side[k_side]
    nq = _crop_length(q_len, q_tokens, Tq, f"{q_name}_len")
    nk = _crop_length(k_len, k_tokens, Tk, f"{k_name}_len")
    q_labels = as_labels(q_tokens, nq, f"{q_name}_tokens")
    k_labels = as_labels(k_tokens, nk, f"{k_name}_tokens")

    # 0.2 inch per token, square tokens where the limits allow: each cell 1.5-3 inches
    # a side, the figure at most ~18 inches wide
    cell_w = min(max(1.5, 0.2 * nk), 3.0, max(1.2, 16.0 / H))
    cell_h = min(max(1.5, cell_w * nq / nk), 3.0)
    fig = new_figure(max(5.0, H * cell_w + 1.9), len(order) * (cell_h + 0.35) + 1.3)
    axes = fig.subplots(len(order), H, squeeze=False)
    for row, layer in enumerate(order):
        weights = layers[layer][example, :, :nq, :nk]                  # (H, nq, nk)
        _check_weights(f"maps[{kind!r} layer {layer}]", weights)
        for head in range(H):
            ax = axes[row, head]
            image = ax.imshow(weights[head], cmap=ATTENTION_CMAP, vmin=0.0, vmax=1.0,
                              aspect="auto", interpolation="nearest")
            ax.set_title(f"layer {layer}, head {head}", fontsize=9)
            token_ticks(ax, "x", k_labels, cell_w, show=row == len(order) - 1)
            token_ticks(ax, "y", q_labels, cell_h, show=head == 0)
    fig.colorbar(image, ax=axes, label="attention weight (each row sums to 1)")
    fig.supylabel(f"query: {q_side} token", fontsize=10)
    fig.supxlabel(f"key: {k_side} token (attended to)", fontsize=10)
    fig.suptitle(title or f"{what}, example {example}\nrows are layers, columns are heads")
    return save_figure(fig, save)


def plot_attention_layer(maps: dict, layer: int, tokens, example: int = 0, columns: int = 4,
                         title: str | None = None, save=None) -> Figure:
    """Every head of one layer of a decoder-only model, for one example, labelled with its tokens.

    ``maps``: as ``attention_maps()`` returns (keys ``layers.<l>.self_attn``, weights
    (B, H, T, T)); ``tokens``: the T labels of the sequence (queries on y, keys on x).
    The heads wrap into rows of ``columns``, each cell 0.22 inch per token (2.5 to 6 inches
    a side), so a 12-head layer of a few dozen tokens stays readable; one figure per layer
    is how a 12 x 12 model is read.
    """
    key = f"layers.{layer}.self_attn"
    if key not in maps:
        layers = sorted(int(m.group(1)) for k in maps
                        if (m := re.fullmatch(ATTENTION_KINDS["self"][0], k)))
        raise ValueError(f"layer: expected one of {layers} (the model's self-attention layers), "
                         f"got {layer!r}")
    weights = np.asarray(maps[key])                                   # (B, H, T, T)
    B, H, T, _ = weights.shape
    if not 0 <= example < B:
        raise ValueError(f"example: {example} out of range for batch size {B}")
    n = _crop_length(None, tokens, T, "tokens")
    labels = as_labels(tokens, n, "tokens")
    weights = weights[example, :, :n, :n]                              # (H, n, n)
    _check_weights(f"maps[{key!r}]", weights)
    columns = min(columns, H)
    rows = -(-H // columns)
    cell = min(max(2.5, 0.22 * n), 6.0)
    fig = new_figure(columns * (cell + 0.6) + 1.6, rows * (cell + 0.6) + 1.4)
    axes = fig.subplots(rows, columns, squeeze=False)
    for head, ax in enumerate(axes.flat):
        if head >= H:
            ax.set_axis_off()
            continue
        image = ax.imshow(weights[head], cmap=ATTENTION_CMAP, vmin=0.0, vmax=1.0, aspect="auto",
                          interpolation="nearest")
        ax.set_title(f"head {head}", fontsize=10)
        token_ticks(ax, "x", labels, cell, show=head + columns >= H)
        token_ticks(ax, "y", labels, cell, show=head % columns == 0)
    fig.colorbar(image, ax=axes, label="attention weight (each row sums to 1)")
    fig.supylabel("query token", fontsize=10)
    fig.supxlabel("key token (attended to)", fontsize=10)
    fig.suptitle(title or f"Self-attention of layer {layer}, every head (causal)")
    return save_figure(fig, save)


def plot_attention_head(attn, query_tokens, key_tokens, title: str = "Attention weights",
                        save=None) -> Figure:
    """One head's weights (Tq, Tk), large, written in the cells when they fit (Tq, Tk <= 20)."""
    attn = np.asarray(attn, dtype=float)
    if attn.ndim != 2:
        raise ValueError(f"attn: expected one head's weights (Tq, Tk), got shape {attn.shape}")
    _check_weights("attn", attn)
    Tq, Tk = attn.shape
    for name, tokens, n in (("query_tokens", query_tokens, Tq), ("key_tokens", key_tokens, Tk)):
        if tokens is not None and len(tokens) != n:
            raise ValueError(f"{name}: expected {n} tokens for attn of shape {attn.shape}, "
                             f"got {len(tokens)}")
    q_labels = as_labels(query_tokens, Tq, "query_tokens")
    k_labels = as_labels(key_tokens, Tk, "key_tokens")
    unit = min(0.5, 7.0 / max(Tq, Tk))
    fig = new_figure(max(4.0, unit * Tk + 2.2), max(3.5, unit * Tq + 1.6))
    ax = fig.subplots()
    image = ax.imshow(attn, cmap=ATTENTION_CMAP, vmin=0.0, vmax=1.0, interpolation="nearest")
    if max(Tq, Tk) <= 20:
        size = min(9.0, 0.3 * 72 * unit)
        for (i, j), value in np.ndenumerate(attn):
            # dark text on the bright end of the colour map, light text on the dark end
            ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=size,
                    color="black" if value > 0.6 else "white")
    token_ticks(ax, "x", k_labels, unit * Tk)
    token_ticks(ax, "y", q_labels, unit * Tq)
    ax.set_xlabel("key token (attended to)")
    ax.set_ylabel("query token")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, label="attention weight")
    return save_figure(fig, save)
