"""Name maps: how a Hugging Face checkpoint's tensors become our parameters, and back.

A family (gpt2.py, llama.py) writes its map as a table, one row per Hugging Face tensor:
their name (without the "transformer." or "model." prefix, ``{i}`` standing for the block
number), our parameter name (or names, when one tensor holds several of ours), what happens
on the way in (a ``Rearrangement``), and when the row exists at all (``only_if``). Loading
walks the table one way, saving walks it back; a rearrangement only moves numbers (a
transpose, a split, a concatenation), never rescales them.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np

from ..nn.config import TransformerConfig


class PretrainedError(ValueError):
    """A Hugging Face folder or model this code cannot read or write faithfully; says why."""


class Rearrangement(NamedTuple):
    """What happens to a tensor on the way in (``load``: theirs -> ours, one array or a tuple
    of them) and on the way out (``save``: ours -> theirs); each undoes the other."""
    what: str
    load: Callable
    save: Callable


AS_IS = Rearrangement("as is", lambda w: w, lambda w: w)
# torch's nn.Linear keeps (out_features, in_features) and computes x @ W.T; our Linear keeps
# (in_features, out_features) and computes x @ W
TRANSPOSE = Rearrangement("transpose (out, in) -> (in, out)", lambda w: w.T, lambda w: w.T)
# GPT-2's c_attn is one (D, 3D) product whose columns are q, then k, then v
SPLIT_QKV = Rearrangement("split the last axis in three: q, k, v",
                          lambda w: tuple(np.split(w, 3, axis=-1)),
                          lambda q, k, v: np.concatenate([q, k, v], axis=-1))


class Row(NamedTuple):
    theirs: str                      # Hugging Face name without the prefix; {i}: block number
    ours: str | tuple[str, ...]      # our parameter name(s)
    how: Rearrangement
    only_if: str = ""                # "": always; "bias": config.bias; "untied": not tie_embeddings


CONDITIONS = {
    "": lambda config: True,
    "bias": lambda config: config.bias,
    "untied": lambda config: not config.tie_embeddings,
}


def rows_for(table: list[Row], config: TransformerConfig) -> list[Row]:
    """The table's rows that exist for ``config``, each block's rows once per block, {i} filled in."""
    rows = []
    for row in table:
        if not CONDITIONS[row.only_if](config):
            continue
        blocks = range(config.n_decoder_layers) if "{i}" in row.theirs else [None]
        for i in blocks:
            ours = row.ours if isinstance(row.ours, tuple) else (row.ours,)
            rows.append(Row(row.theirs.format(i=i), tuple(name.format(i=i) for name in ours), row.how))
    return rows


def to_ours(rows: list[Row], tensors: dict[str, np.ndarray],
            params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Our state (name -> array) from the checkpoint's ``tensors`` (names without prefix), walking
    ``rows``; every row's tensor must be there, floating, and of the shape ``params`` (the model's
    own parameters) say. Tensors no row names are left for the caller to judge."""
    state = {}
    for row in rows:
        if row.theirs not in tensors:
            raise PretrainedError(f"tensor {row.theirs!r} is missing from the checkpoint (it holds "
                                  f"{', '.join(row.ours)} of the model the config describes)")
        tensor = tensors[row.theirs]
        expected = row.how.save(*(params[name] for name in row.ours)).shape
        if tensor.shape != expected:
            raise PretrainedError(f"tensor {row.theirs!r} has shape {list(tensor.shape)}, but the config "
                                  f"gives {list(expected)}")
        if tensor.dtype.kind != "f":
            raise PretrainedError(f"tensor {row.theirs!r} has dtype {tensor.dtype}, expected floating point")
        values = row.how.load(tensor)
        state.update(zip(row.ours, values if isinstance(values, tuple) else (values,)))
    return state


def to_theirs(rows: list[Row], state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The checkpoint's tensors (names without prefix) from our ``state``, walking ``rows`` back."""
    return {row.theirs: row.how.save(*(state[name] for name in row.ours)) for row in rows}
