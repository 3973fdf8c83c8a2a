"""The parser of every command, and ``main``: one command, one exit code."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from .common import PROG, Parser, UsageError, os_error
from .runs import cmd_eval, cmd_generate, cmd_merge, cmd_plot
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
        p.add_argument("run_dir", type=Path, metavar="RUN_DIR",
                       help="a run directory (uses best.npz) or a checkpoint .npz file")
        p.add_argument("--which", choices=("best", "last"),
                       help="which checkpoint of the run directory (default: best)")
        p.set_defaults(run=run)
        return p

    p = run_parser("eval", "exact match of a trained model on held-out sequences", cmd_eval)
    p.add_argument("--min-len", type=int, help="shortest sequence (default: the run's)")
    p.add_argument("--max-len", type=int, help="longest sequence (default: the run's; longer "
                                               "to test length generalisation)")
    p.add_argument("--n", type=int, default=1000, help="number of sequences (default: 1000)")
    p.add_argument("--per-length", action="store_true", help="also print exact match per length")

    p = run_parser("generate", "print the model's output for a sequence you type", cmd_generate)
    p.add_argument("sequence", help='symbols separated by spaces, e.g. "3 4 5 6"')

    p = run_parser("plot", "attention maps for one example, and the training curves", cmd_plot)
    p.add_argument("--example", help='the source sequence to look at, e.g. "3 4 5 6 7"')
    p.add_argument("--out", type=Path, help="where to write the figures (default: RUN_DIR/figures)")

    p = run_parser("merge", "write a LoRA run's model with its adapters merged into the weights, "
                            "as a plain checkpoint", cmd_merge)
    p.add_argument("--out", type=Path, help="the .npz file to write (default: RUN_DIR/merged.npz)")

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
