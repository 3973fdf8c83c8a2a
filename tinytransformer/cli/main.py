"""The parser of every command, and ``main``: one command, one exit code."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from .common import PROG, Parser, UsageError, os_error
from .runs import cmd_eval, cmd_generate, cmd_merge, cmd_plot
from .text import cmd_export
from .train import add_train


def cmd_gradcheck(args) -> int:
    from ..gradcheck import check_all, format_table
    results = check_all()
    print(format_table(results))
    return 0 if all(r.passed for r in results) else 1


def cmd_bench(args) -> int:
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "run.py"
    if not script.is_file():
        raise UsageError(f"bench: {script} not found; the benchmarks live in the repository, "
                         f"run from a source checkout")
    return subprocess.call([sys.executable, str(script), *args.bench_args])


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog=PROG, description="A pure-NumPy Transformer with every backward pass "
                                            "written by hand: train it, evaluate it, look inside.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    add_train(sub)

    def run_parser(name, text, run):
        p = sub.add_parser(name, help=text, description=text)
        p.add_argument("run_dir", type=Path, metavar="MODEL",
                       help="a run directory (uses best.npz), a checkpoint .npz file, or a Hugging "
                            "Face folder (config.json + model.safetensors, GPT-2 or LLaMA)")
        p.add_argument("--which", choices=("best", "last"),
                       help="which checkpoint of the run directory (default: best)")
        p.set_defaults(run=run)
        return p

    p = run_parser("eval", "a toy run: exact match on held-out sequences; a language model: bits per "
                           "character of its validation split (a text run's) or of --text FILE", cmd_eval)
    p.add_argument("--min-len", type=int, help="toy: shortest sequence (default: the run's)")
    p.add_argument("--max-len", type=int, help="toy: longest sequence (default: the run's; longer "
                                               "to test length generalisation)")
    p.add_argument("--n", type=int, help="toy: number of sequences (default: 1000)")
    p.add_argument("--per-length", action="store_true", help="toy: also print exact match per length")
    p.add_argument("--text", type=Path, metavar="FILE",
                   help="language model: score this UTF-8 file, the whole of it (needed for a "
                        "Hugging Face folder; a text run scores its own validation split)")
    p.add_argument("--block-size", type=int,
                   help="language model: the longest window read (default: the run's block size, "
                        "or the model's context)")

    p = run_parser("generate", "a toy run: its output for a sequence you type; a language model: "
                               "the continuation of a prompt (KV cache, stops at its end-of-text; "
                               "past the context it reads the last max_len tokens); tokens per "
                               "second on stderr", cmd_generate)
    p.add_argument("prompt", metavar="PROMPT",
                   help='toy: symbols separated by spaces, e.g. "3 4 5 6"; language model: text')
    p.add_argument("--max-new-tokens", type=int, help="tokens to generate at most (default: 200)")
    p.add_argument("--temperature", type=float,
                   help="sampling temperature, 0 = greedy (default: 0.8)")
    p.add_argument("--top-k", type=int, help="sample among the K most likely tokens (default: all)")
    p.add_argument("--top-p", type=float,
                   help="then among the nucleus: the fewest most likely tokens whose probability "
                        "reaches P (default: all)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampling (default: 0)")

    p = run_parser("plot", "attention maps for one example (a language model: one figure per layer, "
                           "every head, its tokens as labels), and a run's training curves", cmd_plot)
    p.add_argument("--example", help='the input to look at: a toy source sequence, e.g. "3 4 5 6 7", '
                                     'or a language model\'s text')
    p.add_argument("--layer", type=int, help="language model: only this layer (default: every layer)")
    p.add_argument("--out", type=Path, help="where to write the figures (default: MODEL/figures)")

    p = run_parser("merge", "write a LoRA run's model with its adapters merged into the weights, "
                            "as a plain checkpoint", cmd_merge)
    p.add_argument("--out", type=Path, help="the .npz file to write (default: RUN_DIR/merged.npz)")

    p = run_parser("export", "write a language model (a text run, LoRA adapters merged) as a Hugging "
                             "Face folder (GPT-2 or LLaMA) that transformers loads", cmd_export)
    p.add_argument("--out", type=Path, required=True, help="the folder to write")

    p = sub.add_parser("gradcheck", help="check every layer's backward against central differences",
                       description="Gradient-check every layer (float64 central differences) and "
                                   "print a table; exit code 1 if any check fails.")
    p.set_defaults(run=cmd_gradcheck)

    p = sub.add_parser("bench", help="run the benchmarks (benchmarks/run.py)",
                       description="Run benchmarks/run.py of the source checkout; further arguments "
                                   "are passed to it.")
    p.add_argument("bench_args", nargs=argparse.REMAINDER, help="arguments for benchmarks/run.py")
    p.set_defaults(run=cmd_bench)
    return parser


def main(argv=None) -> int:
    """Run one command; return its exit code (0 ok, 1 failed, 2 bad arguments, 130 Ctrl-C)."""
    try:
        # parse_known_args: argparse does not hand an option such as `bench --quick` to the
        # REMAINDER of a subcommand, so bench collects what is left over here
        args, extra = build_parser().parse_known_args(argv)
        if extra:
            if getattr(args, "run", None) is not cmd_bench:
                raise UsageError(f"unrecognized arguments: {' '.join(extra)}")
            args.bench_args = [*extra, *args.bench_args]
        return args.run(args)
    except UsageError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:           # a file that cannot be read or written: say which and why
        print(f"{PROG}: error: {os_error(err)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
