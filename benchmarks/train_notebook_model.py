"""The small character model notebook 09 reads its heads from: trained once, committed.

    python benchmarks/train_notebook_model.py             # writes notebooks/data/text_model.npz

A two-layer model (the fewest layers in which a head can build on what a head of an
earlier layer found: copying a repeated sequence needs two), d_model 64, four heads, trained
on the default corpus with the reference text run's recipe (``text_reference.py``: the same
loop, batches and evaluation), shorter. The checkpoint is float32, ~0.5 MB; its ``extra``
holds the tokenizer's characters, the corpus, the recipe and the validation bits per character.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

import text_reference  # noqa: E402
from tinytransformer import CharTokenizer  # noqa: E402
from tinytransformer.text import TextData, default_corpus  # noqa: E402

# the exact GELU: the committed model was trained before the text run took the tanh one, and
# notebook 09's reading of its heads is of that model
RECIPE = {**text_reference.RECIPE, "n_layers": 2, "d_model": 64, "d_ff": 256, "steps": 1500, "activation": "gelu"}
OUT = HERE.parent / "notebooks" / "data" / "text_model.npz"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    text = default_corpus()
    data = TextData.from_text(text, CharTokenizer.from_text(text), RECIPE["block_size"])
    result, model = text_reference.run("NumPy", args.seed, data, RECIPE, budget=float("inf"))
    text_reference.save_model(args.out, model, data.tokenizer, result, RECIPE)
    print(f"validation {result['final_bpc']:.3f} bits per character after {result['steps']} steps, "
          f"{result['train_seconds']:.0f} s of training")


if __name__ == "__main__":
    main()
