"""Diagrams of fixed parts: the positional table, attention masks, gradient-check errors."""

from __future__ import annotations

import math

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from .canvas import new_figure, save_figure


def plot_positional_encoding(table, save=None) -> Figure:
    """The positional table (max_len, D) as an image, and a few of its columns as curves.

    For the sinusoidal table, column 2i is sin(pos / 10000^(2i/D)) and 2i+1 the
    matching cos. A learned table (``LearnedPositionalEmbedding.weight``) works too.
    """
    table = np.asarray(table, dtype=float)
    if table.ndim != 2:
        raise ValueError(f"table: expected (max_len, D), got shape {table.shape}")
    max_len, D = table.shape
    fig = new_figure(8.0, 8.5)
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
    return save_figure(fig, save)


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
    fig = new_figure(panel * len(pictures) + 0.6, panel + 1.5)
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
    return save_figure(fig, save)


def plot_gradcheck(results, save=None) -> Figure:
    """Worst input and worst parameter relative error of each checked layer, on a log axis.

    ``results``: ``GradcheckResult`` objects from ``tinytransformer.gradcheck``.
    Errors of exactly 0 are drawn at 1e-17 (a log axis cannot show 0).
    """
    results = list(results)
    if not results:
        raise ValueError("results: expected at least one GradcheckResult")
    floor = 1e-17
    fig = new_figure(8.5, 0.38 * len(results) + 2.2)
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
    return save_figure(fig, save)
