"""Pictures of what the model computes and how its training went.

Every function takes plain arrays, dicts and lists, returns a
``matplotlib.figure.Figure`` and, given ``save=`` (a path or a list of paths
ending in .png or .svg), writes it there, creating parent directories; each
file is written whole or not at all (a temporary file renamed into place).

What to notice in each:

``plot_attention_grid(maps, kind, ...)``
    Every head of every layer of one kind of attention, for one example.
    Each row of a cell is a query and sums to 1 over the keys. In the decoder
    everything above the diagonal is zero (the causal mask). In a model trained
    to reverse, some cross-attention head draws an anti-diagonal: target
    position i looks at source position T-1-i. Heads in one layer usually
    differ; that is the point of having several.
``plot_attention_head(attn, query_tokens, key_tokens, title)``
    One head, large, with its weights written in the cells when they fit:
    check by eye that each row sums to 1 and where the weight concentrates.
``plot_training_curves(history)``
    The loss falls fast, stalls, then drops again when the model "gets" the
    task; exact match (whole sequence right) lags token accuracy and swings
    even late in training; the learning rate warms up then decays as
    1/sqrt(step); spikes in the gradient norm line up with bumps in the loss.
``plot_positional_encoding(table)``
    Low dimensions oscillate fast, high ones slowly (wavelengths grow
    geometrically from 2*pi to 10000*2*pi), so every position gets a distinct
    row; sin and cos alternate between neighbouring columns.
``plot_masks(masks)``
    White = may attend. Causal masks are lower triangles; padding masks blank
    whole key columns; the combined mask is their AND.
``plot_gradcheck(results)``
    Every point should sit far left of the tolerance line: a right backward
    pass agrees with central differences to ~1e-8 or better; a wrong one is
    off by ~1e-1.
``plot_length_generalisation(lengths, exact_match, train_max_len)``
    Inside the training range exact match is near 1; beyond it, it falls off,
    often abruptly: the model learned the lengths it saw, not the rule.

Figures and global state: figures are built as ``Figure`` objects with an Agg
canvas and pyplot is never imported, so plotting works without a display,
selects no backend, and leaves pyplot's list of open figures alone (nothing
leaks in a long training script, nothing is shown twice in a notebook).
In a notebook run ``%matplotlib inline`` once; after that a returned figure
that ends a cell is displayed. Nothing here calls ``show()``.

Legend: B batch, H heads, L layers, Tq query positions, Tk key positions,
D d_model.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from .checkpoint import atomic_write

__all__ = [
    "plot_attention_grid", "plot_attention_head", "plot_training_curves",
    "plot_positional_encoding", "plot_masks", "plot_gradcheck", "plot_length_generalisation",
]

ATTENTION_CMAP = "viridis"   # 0 dark, 1 bright, readable in grey print and by colour-blind readers
SAVE_DPI = 150

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


def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, save) -> Figure:
    """Write ``fig`` to every path in ``save`` (None, one path, or a list of paths)."""
    if save is None:
        return fig
    paths = [Path(save)] if isinstance(save, (str, os.PathLike)) else [Path(p) for p in save]
    for path in paths:   # check every path before writing any
        if path.suffix.lower() not in (".png", ".svg"):
            raise ValueError(f"save: expected paths ending in .png or .svg, got {str(path)!r}")
    for path in paths:   # atomically: a kill mid-write never leaves a truncated figure behind
        atomic_write(path, lambda f: fig.savefig(f, format=path.suffix[1:].lower(), dpi=SAVE_DPI))
    return fig


def _token_ticks(ax, axis: str, labels: Sequence[str], inches: float, show: bool = True) -> None:
    """Put one tick per token on ``axis``, with a font small enough not to overlap.

    Labels get at most 0.75 of the space per token; below 5 pt only every
    k-th token is labelled. Long x labels are turned upright. ``show=False``
    keeps the ticks and hides the labels (inner cells of a grid).
    """
    n = len(labels)
    step = max(1, math.ceil(5.0 * n / (0.75 * 72 * inches)))
    size = min(9.0, 0.75 * 72 * inches * step / n)
    ticks = np.arange(0, n, step)
    texts = [labels[i] for i in ticks]
    if axis == "x":
        widest = max(len(t) for t in labels) * 0.6 * size   # points, for a typical font
        rotation = 90 if widest > 0.9 * 72 * inches * step / n else 0
        ax.set_xticks(ticks, texts, fontsize=size, rotation=rotation)
        ax.tick_params(axis="x", labelbottom=show)
    else:
        ax.set_yticks(ticks, texts, fontsize=size)
        ax.tick_params(axis="y", labelleft=show)


def _as_labels(tokens, n: int, name: str) -> list[str]:
    if tokens is None:
        return [str(i) for i in range(n)]
    labels = [str(t) for t in tokens]
    if len(labels) < n:
        raise ValueError(f"{name}: {len(labels)} tokens for {n} positions")
    return labels[:n]


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
    q_labels = _as_labels(q_tokens, nq, f"{q_name}_tokens")
    k_labels = _as_labels(k_tokens, nk, f"{k_name}_tokens")

    # 0.2 inch per token, square tokens where the limits allow: each cell 1.5-3 inches
    # a side, the figure at most ~18 inches wide
    cell_w = min(max(1.5, 0.2 * nk), 3.0, max(1.2, 16.0 / H))
    cell_h = min(max(1.5, cell_w * nq / nk), 3.0)
    fig = _new_figure(max(5.0, H * cell_w + 1.9), len(order) * (cell_h + 0.35) + 1.3)
    axes = fig.subplots(len(order), H, squeeze=False)
    for row, layer in enumerate(order):
        weights = layers[layer][example, :, :nq, :nk]                  # (H, nq, nk)
        _check_weights(f"maps[{kind!r} layer {layer}]", weights)
        for head in range(H):
            ax = axes[row, head]
            image = ax.imshow(weights[head], cmap=ATTENTION_CMAP, vmin=0.0, vmax=1.0,
                              aspect="auto", interpolation="nearest")
            ax.set_title(f"layer {layer}, head {head}", fontsize=9)
            _token_ticks(ax, "x", k_labels, cell_w, show=row == len(order) - 1)
            _token_ticks(ax, "y", q_labels, cell_h, show=head == 0)
    fig.colorbar(image, ax=axes, label="attention weight (each row sums to 1)")
    fig.supylabel(f"query: {q_side} token", fontsize=10)
    fig.supxlabel(f"key: {k_side} token (attended to)", fontsize=10)
    fig.suptitle(title or f"{what}, example {example}\nrows are layers, columns are heads")
    return _save(fig, save)


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
    q_labels = _as_labels(query_tokens, Tq, "query_tokens")
    k_labels = _as_labels(key_tokens, Tk, "key_tokens")
    unit = min(0.5, 7.0 / max(Tq, Tk))
    fig = _new_figure(max(4.0, unit * Tk + 2.2), max(3.5, unit * Tq + 1.6))
    ax = fig.subplots()
    image = ax.imshow(attn, cmap=ATTENTION_CMAP, vmin=0.0, vmax=1.0, interpolation="nearest")
    if max(Tq, Tk) <= 20:
        size = min(9.0, 0.3 * 72 * unit)
        for (i, j), value in np.ndenumerate(attn):
            # dark text on the bright end of the colour map, light text on the dark end
            ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=size,
                    color="black" if value > 0.6 else "white")
    _token_ticks(ax, "x", k_labels, unit * Tk)
    _token_ticks(ax, "y", q_labels, unit * Tq)
    ax.set_xlabel("key token (attended to)")
    ax.set_ylabel("query token")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, label="attention weight")
    return _save(fig, save)


def _smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Bias-corrected exponential moving average with time constant ``window`` steps.

    Non-finite values (a diverged step) are skipped, the average carried over them.
    """
    decay = 1.0 - 1.0 / window
    out = np.full(len(values), np.nan)
    average, weight = 0.0, 0.0
    for t, v in enumerate(values):
        if np.isfinite(v):
            average = decay * average + (1 - decay) * v
            weight = decay * weight + (1 - decay)
        if weight > 0:
            out[t] = average / weight    # divide by the weight so early steps are not pulled to 0
    return out


def _series(history: dict, name: str, n: int) -> np.ndarray | None:
    if not history.get(name):
        return None
    values = np.asarray(history[name], dtype=float)
    if values.shape != (n,):
        raise ValueError(f"history[{name!r}]: expected {n} values (one per step), "
                         f"got shape {values.shape}")
    return values


def _no_data(ax, what: str) -> None:
    ax.text(0.5, 0.5, f"no {what} recorded", transform=ax.transAxes, ha="center", va="center",
            color="0.5")


def plot_training_curves(history: dict, save=None) -> Figure:
    """Loss, learning rate, held-out accuracy and gradient norm against the training step.

    ``history``: ``{"step": [...], "loss": [...], "lr": [...], "grad_norm": [...],
    "eval": [{"step", "exact_match", "token_accuracy"}, ...]}`` (each evaluation may also
    give "worst", the exact match of its worst length, and "worst_length") and optionally
    ``"target"`` and ``"target_worst"`` (the stop rule: exact match at least ``target``
    overall and at least ``target_worst`` at every length). Missing series leave their
    panel empty with a note.
    """
    if not history.get("step"):
        raise ValueError("history: expected a non-empty 'step' list")
    steps = np.asarray(history["step"], dtype=float)
    loss = _series(history, "loss", len(steps))
    lr = _series(history, "lr", len(steps))
    grad_norm = _series(history, "grad_norm", len(steps))
    evals = history.get("eval") or []
    target, target_worst = history.get("target"), history.get("target_worst")

    fig = _new_figure(11.0, 7.0)
    (ax_loss, ax_lr), (ax_eval, ax_grad) = fig.subplots(2, 2, sharex=True)
    if loss is None:
        _no_data(ax_loss, "loss")
    else:
        window = len(loss) // 25
        if window >= 2:   # too few steps to be worth smoothing otherwise
            ax_loss.plot(steps, loss, color="C0", alpha=0.3, lw=0.8, label="each step")
            ax_loss.plot(steps, _smooth(loss, window), color="C0", lw=2,
                         label=f"smoothed (moving average over ~{window} steps)")
            ax_loss.legend(fontsize=8)
        else:
            ax_loss.plot(steps, loss, color="C0", lw=1.2)
        ax_loss.set_yscale("log")
    ax_loss.set(title="Training loss (cross-entropy per target token)", ylabel="loss (log scale)")

    if lr is None:
        _no_data(ax_lr, "learning rate")
    else:
        ax_lr.plot(steps, lr, color="C1")
        ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    ax_lr.set(title="Learning rate (warm-up, then decay)", ylabel="learning rate")

    if evals:
        eval_steps = [e["step"] for e in evals]
        ax_eval.plot(eval_steps, [e["token_accuracy"] for e in evals], "o-", color="C2", ms=4,
                     label="token accuracy")
        ax_eval.plot(eval_steps, [e["exact_match"] for e in evals], "s-", color="C3", ms=4,
                     label="exact match (whole sequence)")
        if all("worst" in e for e in evals):
            ax_eval.plot(eval_steps, [e["worst"] for e in evals], "^--", color="C3", ms=4, alpha=0.6,
                         label="exact match at the worst length")
        if target is not None:
            ax_eval.axhline(target, color="0.3", ls="--", lw=1, label=f"target {target:g}")
            reached = [s for s, e in zip(eval_steps, evals) if e["exact_match"] >= target
                       and (target_worst is None or e.get("worst", 1.0) >= target_worst)]
            if reached:
                ax_eval.axvline(reached[0], color="0.3", ls=":", lw=1,
                                label=f"solved at step {reached[0]}" if target_worst is not None
                                else f"target first reached, step {reached[0]}")
        ax_eval.legend(fontsize=8, loc="lower right")
    else:
        _no_data(ax_eval, "evaluation")
    ax_eval.set(title="Held-out accuracy (greedy decoding)", ylabel="fraction correct",
                ylim=(-0.02, 1.02), xlabel="training step")

    if grad_norm is None:
        _no_data(ax_grad, "gradient norm")
    else:
        ax_grad.plot(steps, grad_norm, color="C4", lw=0.8)
        ax_grad.set_yscale("log")
    ax_grad.set(title="Global gradient norm", ylabel="norm (log scale)", xlabel="training step")
    ax_grad.xaxis.set_major_locator(MaxNLocator(integer=True))   # shared by all four panels
    fig.suptitle("Training curves")
    return _save(fig, save)


def plot_positional_encoding(table, save=None) -> Figure:
    """The positional table (max_len, D) as an image, and a few of its columns as curves.

    For the sinusoidal table, column 2i is sin(pos / 10000^(2i/D)) and 2i+1 the
    matching cos. A learned table (``LearnedPositionalEmbedding.weight``) works too.
    """
    table = np.asarray(table, dtype=float)
    if table.ndim != 2:
        raise ValueError(f"table: expected (max_len, D), got shape {table.shape}")
    max_len, D = table.shape
    fig = _new_figure(8.0, 8.5)
    ax_image, ax_curves = fig.subplots(2, 1, height_ratios=[2.2, 1])
    limit = float(np.abs(table).max()) or 1.0
    image = ax_image.imshow(table, cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto",
                            interpolation="nearest")
    ax_image.set(title=f"Positional encoding table ({max_len} positions x {D} dimensions)",
                 xlabel="dimension", ylabel="position")
    ax_image.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_image.yaxis.set_major_locator(MaxNLocator(integer=True))
    fig.colorbar(image, ax=ax_image, label="value (0 = white)")

    # even columns spread over the range: fast to slow oscillation
    dims = sorted({2 * (i * D // 8 // 2) for i in (0, 1, 2, 4)} & set(range(D)))
    for dim in dims:
        ax_curves.plot(np.arange(max_len), table[:, dim], lw=1.5, label=f"dimension {dim}")
    # headroom above the curves for a one-line legend, so it covers none of them
    ax_curves.set(title="A few dimensions as curves over position", xlabel="position",
                  ylabel="value", xlim=(0, max_len - 1), ylim=(-1.15 * limit, 1.75 * limit))
    ax_curves.legend(fontsize=8, loc="upper center", ncols=len(dims), frameon=False)
    return _save(fig, save)


def _mask_2d(name: str, mask: np.ndarray, example: int) -> np.ndarray:
    """(T,) key mask, (Tq, Tk), (B, Tq, Tk) or (B, H, Tq, Tk) -> one 2-D picture."""
    if mask.dtype != bool:
        raise TypeError(f"masks[{name!r}]: expected a boolean array (True = may attend), "
                        f"got {mask.dtype.name}")
    if mask.ndim == 1:
        return mask[None, :]
    if mask.ndim == 2:
        return mask
    if mask.ndim in (3, 4):
        picked = mask[min(example, mask.shape[0] - 1)]  # a batch axis of 1 broadcasts
        return picked if picked.ndim == 2 else picked[0]  # masks are shared by the heads
    raise ValueError(f"masks[{name!r}]: expected 1 to 4 dimensions, got shape {mask.shape}")


def plot_masks(masks: dict, example: int = 0, save=None) -> Figure:
    """Boolean attention masks side by side, white = may attend, black = masked.

    Batched masks show batch element ``example`` (head 0). When the masks
    broadcast to one (Tq, Tk) they are drawn broadcast, so a padding mask
    (B, 1, 1, T) shows as blanked key columns next to the causal triangle.
    """
    if not masks:
        raise ValueError("masks: expected at least one mask")
    pictures = {name: _mask_2d(name, np.asarray(m), example) for name, m in masks.items()}
    try:
        common = np.broadcast_shapes(*(p.shape for p in pictures.values()))
        pictures = {n: np.broadcast_to(p, common) for n, p in pictures.items()}
    except ValueError:
        pass   # different sequence lengths: draw each as it is
    longest = max(max(p.shape) for p in pictures.values())
    panel = min(3.2, max(2.2, 0.2 * longest))
    fig = _new_figure(panel * len(pictures) + 0.6, panel + 1.5)
    axes = fig.subplots(1, len(pictures), squeeze=False)[0]
    for ax, (name, picture) in zip(axes, pictures.items()):
        ax.imshow(picture.astype(float), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(f"{name}\nshape {np.shape(masks[name])}", fontsize=10)
        ax.set(xlabel="key position", ylabel="query position")
        for axis, n in ((ax.xaxis, picture.shape[1]), (ax.yaxis, picture.shape[0])):
            axis.set_major_locator(MaxNLocator(integer=True, nbins=min(n, 8)))
            if n <= 32:   # cell borders, so single cells can be counted
                axis.set_ticks(np.arange(n + 1) - 0.5, minor=True)
        if max(picture.shape) <= 32:
            ax.grid(which="minor", color="0.55", lw=0.5)
            ax.tick_params(which="minor", length=0)
    fig.legend(handles=[Patch(facecolor="white", edgecolor="0.3", label="True: may attend"),
                        Patch(facecolor="black", edgecolor="0.3", label="False: masked")],
               loc="outside lower center", ncols=2, fontsize=9)
    fig.suptitle("Attention masks (rows are queries, columns are keys)")
    return _save(fig, save)


def plot_gradcheck(results, save=None) -> Figure:
    """Worst input and worst parameter relative error of each checked layer, on a log axis.

    ``results``: ``GradcheckResult`` objects from ``tinytransformer.gradcheck``.
    Errors of exactly 0 are drawn at 1e-17 (a log axis cannot show 0).
    """
    results = list(results)
    if not results:
        raise ValueError("results: expected at least one GradcheckResult")
    floor = 1e-17
    fig = _new_figure(8.5, 0.38 * len(results) + 2.2)
    ax = fig.subplots()
    rows = np.arange(len(results))
    errors = []
    for kind, marker, colour, label in (("input", "o", "C0", "worst input gradient"),
                                        ("param", "s", "C1", "worst parameter gradient")):
        points = [(row, r.worst(kind).error) for row, r in zip(rows, results) if r.worst(kind)]
        if points:
            y, error = np.array(points).T
            ax.scatter(np.maximum(error, floor), y, marker=marker, color=colour, s=36,
                       label=label, zorder=3)
            errors.extend(error)
    tolerances = sorted({r.tol for r in results})
    for tol in tolerances:
        ax.axvline(tol, color="C3", ls="--", lw=1.2, label=f"tolerance {tol:.0e}")
    # whole decades from a decade below the smallest error to well past the tolerance
    shown = [max(e, floor) for e in errors] + tolerances
    left = 10.0 ** (math.floor(math.log10(min(shown))) - 1)
    right = 10.0 ** (math.ceil(math.log10(max(shown))) + 2)
    ax.axvspan(min(tolerances), right, color="C3", alpha=0.07, lw=0, label="fails")
    ax.set_xscale("log")
    ax.set_xlim(left, right)
    ax.set_yticks(rows, [r.name for r in results], fontsize=9)
    for text, result in zip(ax.get_yticklabels(), results):
        text.set_color("black" if result.passed else "C3")
    ax.set_ylim(len(results) - 0.5, -0.5)   # first result on top
    ax.grid(axis="y", color="0.9")
    ax.grid(axis="x", color="0.93")
    zeros = "; exact zeros drawn at 1e-17" if min(errors, default=1.0) == 0 else ""
    ax.set_xlabel("worst relative error  |analytic - numeric| / max(|analytic| + |numeric|, 1e-3)"
                  f"  (log scale{zeros})", fontsize=9)
    passed = sum(r.passed for r in results)
    ax.set_title(f"Gradient check: backward vs central differences\n"
                 f"{passed} of {len(results)} pass" + ("" if passed == len(results)
                                                      else " (failing names in red)"))
    fig.legend(loc="outside lower center", ncols=4, fontsize=8)
    return _save(fig, save)


def plot_length_generalisation(lengths, exact_match, train_max_len: int, save=None,
                               train_min_len: int = 1) -> Figure:
    """Exact match against sequence length, the lengths seen in training shaded.

    ``exact_match``: one value per length, or a dict label -> values to
    compare several models (say sinusoidal vs learned positions).
    """
    lengths = np.asarray(lengths)
    series = exact_match if isinstance(exact_match, dict) else {"exact match": exact_match}
    fig = _new_figure(7.5, 4.5)
    ax = fig.subplots()
    ax.axvspan(train_min_len - 0.5, train_max_len + 0.5, color="0.92",
               label=f"training lengths ({train_min_len}-{train_max_len})")
    for label, values in series.items():
        values = np.asarray(values, dtype=float)
        if values.shape != lengths.shape:
            raise ValueError(f"exact_match[{label!r}]: expected {lengths.shape[0]} values (one per "
                             f"length), got shape {values.shape}")
        ax.plot(lengths, values, "o-", ms=4, label=label)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel="sequence length (symbols)", ylabel="exact match (whole sequence right)",
           ylim=(-0.02, 1.02), title="Length generalisation: exact match vs sequence length")
    ax.set_xlim(min(lengths.min(), train_min_len) - 0.5, max(lengths.max(), train_max_len) + 0.5)
    ax.legend(fontsize=9, loc="lower left")
    return _save(fig, save)
