"""Figures without pyplot, saved atomically, with one readable tick per token."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..atomic import atomic_write

ATTENTION_CMAP = "viridis"   # 0 dark, 1 bright, readable in grey print and by colour-blind readers
SAVE_DPI = 150


def new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, save) -> Figure:
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


def token_ticks(ax, axis: str, labels: Sequence[str], inches: float, show: bool = True) -> None:
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


def as_labels(tokens, n: int, name: str) -> list[str]:
    if tokens is None:
        return [str(i) for i in range(n)]
    labels = [str(t) for t in tokens]
    if len(labels) < n:
        raise ValueError(f"{name}: {len(labels)} tokens for {n} positions")
    return labels[:n]
