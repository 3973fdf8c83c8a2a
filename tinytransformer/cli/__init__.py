"""The command line: ``tinytransformer <command>`` or ``python -m tinytransformer <command>``.

    train      train a model on a toy task (defaults: the reference run) or a text (--task text),
               from scratch or from a trained run or a Hugging Face folder (--init-from)
    eval       a toy run: exact match on held-out sequences (longer ones if asked);
               a language model: bits per character of its validation split or of a file
    generate   a toy run: its output for a sequence you type; a language model: a prompt continued
    plot       attention maps of every head for one example, and the training curves
    merge      fold a LoRA run's adapters into its weights: a plain checkpoint
    export     a language model as a Hugging Face folder (GPT-2 or LLaMA) transformers loads
    gradcheck  check every layer's backward against central differences
    bench      run benchmarks/run.py (the benchmark suite of the repository)

Every command that reads a model opens it with ``open.open_model``: a run directory, a
checkpoint file or a Hugging Face folder.

A mistake in the arguments (a damaged checkpoint, an unusable run directory
included) is reported as one line on stderr with exit code 2; a failure while
running (divergence, a disk that fills up) as one line with exit code 1.
"""

from .common import PROG, UsageError
from .main import build_parser, main
from .runs import write_plots
from .train import train_configs

__all__ = ["main", "build_parser", "write_plots", "train_configs", "PROG", "UsageError"]
