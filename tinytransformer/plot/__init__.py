"""Pictures of what the model computes and how its training went.

Four files: ``canvas.py`` (figures without pyplot, atomic saving, token ticks),
``attention.py`` (attention maps), ``training.py`` (training curves, length
generalisation) and ``diagrams.py`` (positional encoding, masks, gradient checks).

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
    even late in training; the learning rate warms up then decays; spikes in the gradient norm line up with bumps in the loss.
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

from .attention import plot_attention_grid, plot_attention_head, plot_attention_layer
from .diagrams import plot_gradcheck, plot_masks, plot_positional_encoding
from .training import plot_length_generalisation, plot_training_curves

__all__ = [
    "plot_attention_grid", "plot_attention_head", "plot_attention_layer", "plot_training_curves",
    "plot_positional_encoding", "plot_masks", "plot_gradcheck", "plot_length_generalisation",
]
