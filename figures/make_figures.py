"""Regenerate the figures of the README and docs/ from a seeded reference run.

    python figures/make_figures.py            # trains the reference run (seed 0) if needed, ~1 min
    python figures/make_figures.py --retrain  # train it again even if runs/figures-reference exists

Writes into figures/: the attention grids of the trained reverse model
(encoder, decoder, cross), its training curves, the sinusoidal positional
encoding, the masks, and the gradient-check errors of every layer.
(benchmark_scaling.png comes from benchmarks/run.py.)
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np

from tinytransformer.cli import write_plots
from tinytransformer.gradcheck import check_all
from tinytransformer.nn.attention import causal_mask, padding_mask
from tinytransformer.nn.embedding import sinusoidal_table
from tinytransformer.plot import plot_gradcheck, plot_masks, plot_positional_encoding
from tinytransformer.train import TrainConfig, train

FIGURES = Path(__file__).resolve().parent
RUN = FIGURES.parent / "runs" / "figures-reference"
EXAMPLE = "3 1 4 1 5 9 2 6 5 3"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--retrain", action="store_true", help="train the reference run again")
    args = parser.parse_args()
    if args.retrain and RUN.exists():
        shutil.rmtree(RUN)
    if not (RUN / "best.npz").exists():
        train(TrainConfig(seed=0), out_dir=RUN)

    _, saved = write_plots(RUN, EXAMPLE, out_dir=FIGURES)
    ids = np.array([[5, 8, 3, 9, 0, 0], [4, 7, 0, 0, 0, 0]])        # two padded sources
    masks = {"causal (T, T)": causal_mask(6), "padding (B, 1, 1, T)": padding_mask(ids),
             "causal & padding": causal_mask(6) & padding_mask(ids)}
    saved += [FIGURES / "positional_encoding.png", FIGURES / "masks.png", FIGURES / "gradcheck.png"]
    plot_positional_encoding(sinusoidal_table(64, 64), save=saved[-3])
    plot_masks(masks, save=saved[-2])
    plot_gradcheck(check_all(), save=saved[-1])
    for path in saved:
        print(path)


if __name__ == "__main__":
    main()
