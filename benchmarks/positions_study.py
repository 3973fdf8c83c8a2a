"""What positions do to length generalisation: train at lengths 1..16, evaluate at 1..32.

    python benchmarks/positions_study.py                                  # the whole study (hours)
    python benchmarks/positions_study.py --tasks reverse --seeds 0        # a slice of it
    python benchmarks/positions_study.py --quick                          # a smoke run (seconds)
    python benchmarks/positions_study.py --table                          # the table from the results

For each model kind (encoder-decoder, decoder-only), task (copy, reverse), positional
choice (sinusoidal, learned, rope, alibi, none) and seed, ``tinytransformer.train`` runs
the recipe of the reference run (``TrainConfig`` defaults: only the task, the model kind,
the seed and, with ``--budget``, the step budget are set) on lengths 1..16 until it solves
the task or the budget ends; the kept model is then decoded greedily on ``--per-length``
fresh sequences of every length 1..``--eval-max``. The model's max_len is raised to fit the
longest evaluation sequence (for "learned" that adds table rows no training ever reaches:
part of what is measured).

Every finished run is appended to the JSON results at once (``--out``), and a run already
there is skipped, so an interrupted study continues where it stopped. The Markdown table
(steps to solve, exact match at the trained lengths and beyond) is printed and written
beside the JSON; ``--figure`` draws exact match against length, one panel per model and
task, the mean over seeds with each seed faint.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]   # the package of this checkout, machine.py

from tinytransformer import threads  # noqa: E402
from machine import commit, describe, stated  # noqa: E402
from tinytransformer.train import (TrainConfig, default_model_config, evaluate, held_out,  # noqa: E402
                                   longest_input, train)

POSITIONALS = ("sinusoidal", "learned", "rope", "alibi", "none")
FRESH_SEED = 4242                       # evaluation sequences the stop rule never saw


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["encoder-decoder", "decoder-only"])
    parser.add_argument("--tasks", nargs="+", default=["copy", "reverse"])
    parser.add_argument("--positionals", nargs="+", default=list(POSITIONALS), choices=POSITIONALS)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--budget", type=int, default=None, help="step budget (default: TrainConfig's)")
    parser.add_argument("--eval-max", type=int, default=32, help="longest evaluation length (default 32)")
    parser.add_argument("--per-length", type=int, default=200, help="evaluation sequences per length")
    parser.add_argument("--threads", type=int, default=None,
                        help="threads per run (default: the package's; 1 to run two studies side by side)")
    parser.add_argument("--quick", action="store_true", help="a tiny smoke run, written to --out only")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "positions_study.json")
    parser.add_argument("--figure", type=Path, default=None, help="also draw the per-length figure here")
    parser.add_argument("--table", action="store_true", help="run nothing: write the table again from --out")
    return parser.parse_args(argv)


def run_one(model_kind: str, task: str, positional: str, seed: int, args) -> dict:
    """Train one model on lengths 1..16, then evaluate it at every length 1..eval_max."""
    overrides = dict(task=task, model=model_kind, seed=seed)
    if args.budget is not None:
        overrides["steps"] = args.budget
    if args.quick:
        overrides.update(steps=20, eval_every=10, eval_size=64, max_len=4, n_symbols=4)
    config = TrainConfig(**overrides)
    model_config = default_model_config(config, positional=positional,
                                        max_len=max(64, longest_input(config, args.eval_max) + 1))
    start = time.perf_counter()
    with threads(args.threads):
        result = train(config, model_config, stream=io.StringIO())
        data = held_out(config, 1, args.eval_max, args.per_length * args.eval_max, seed=FRESH_SEED)
        scores = evaluate(result.model, data)
    return {"model": model_kind, "task": task, "positional": positional, "seed": seed,
            "solved": result.stopped == "target", "steps": result.steps, "budget": config.steps,
            "best_step": result.best["step"] if result.best else None,
            "seconds": round(time.perf_counter() - start, 1), "trained_max_len": config.max_len,
            "by_length": {int(k): float(v) for k, v in scores["by_length"].items()}}


def summary_table(runs: list[dict], trained: int) -> str:
    """One row per model, task and positional choice, over its seeds."""
    beyond = (trained + 1, trained + 4, trained + 8, 2 * trained)
    longest = max(max(r["by_length"]) for r in runs)
    lines = [f"| model | task | positional | seeds solved | steps (median) | exact match 1..{trained} | "
             f"{trained + 1}..{longest} | " + " | ".join(str(L) for L in beyond) + " |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    groups: dict[tuple, list[dict]] = {}
    for r in runs:
        groups.setdefault((r["model"], r["task"], r["positional"]), []).append(r)
    for (model, task, positional), rs in groups.items():
        def mean_at(lengths):       # over the seeds, of each seed's mean over the lengths
            lengths = [L for L in lengths if L in rs[0]["by_length"]]
            if not lengths:
                return "-"
            return f"{np.mean([np.mean([r['by_length'][L] for L in lengths]) for r in rs]):.2f}"
        solved = [r["best_step"] for r in rs if r["solved"]]
        steps = f"{int(np.median(solved))}" if solved else "-"
        lines.append(f"| {model} | {task} | {positional} | {len(solved)}/{len(rs)} | {steps} | "
                     f"{mean_at(range(1, trained + 1))} | {mean_at(range(trained + 1, longest + 1))} | " +
                     " | ".join(mean_at([L]) for L in beyond) + " |")
    return "\n".join(lines)


def draw(runs: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    models = sorted({r["model"] for r in runs})
    tasks = sorted({r["task"] for r in runs})
    fig, axes = plt.subplots(len(models), len(tasks), figsize=(4.8 * len(tasks), 3.4 * len(models)),
                             squeeze=False, sharex=True, sharey=True)
    for ax, (model, task) in zip(axes.flat, [(m, t) for m in models for t in tasks]):
        for i, positional in enumerate(POSITIONALS):
            rs = [r for r in runs if (r["model"], r["task"], r["positional"]) == (model, task, positional)]
            if not rs:
                continue
            lengths = sorted(rs[0]["by_length"])
            curves = np.array([[r["by_length"][L] for L in lengths] for r in rs])
            for curve in curves:
                ax.plot(lengths, curve, color=f"C{i}", alpha=0.25, lw=0.8)
            ax.plot(lengths, curves.mean(0), color=f"C{i}", lw=2, label=positional)
        ax.axvline(rs[0]["trained_max_len"] + 0.5, color="gray", ls=":", lw=1)
        ax.set(title=f"{model}, {task}")
    for ax in axes[-1]:
        ax.set_xlabel("source length")
    for ax in axes[:, 0]:
        ax.set_ylabel("exact match")
    fig.suptitle(f"trained on lengths 1..{runs[0]['trained_max_len']} (dotted line); seeds "
                 f"{sorted({r['seed'] for r in runs})}, mean bold", fontsize=9)
    axes[0, -1].legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def header(results: dict) -> str:
    """The line that states where the study ran, and what the table's columns are."""
    runs = results["runs"]
    machine = results.get("machine", f"a machine not recorded, NumPy {results['numpy']}")
    per_length = (f"{results['per_length']} sequences per evaluation length" if "per_length" in results
                  else "sequences per evaluation length not recorded (the default is 200)")
    return (f"{stated(machine, results.get('commit'))} Seeds {sorted({r['seed'] for r in runs})}, step "
            f"budgets {sorted({r.get('budget') for r in runs}, key=str)}, {per_length}. Exact match: "
            f"mean over the seeds (over a range of lengths: of each seed's mean over them); steps: "
            f"median over the seeds that solved the task.\n\n")


def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    if args.quick:
        args.eval_max, args.per_length = 6, 4
    results = json.loads(args.out.read_text()) if args.out.is_file() else {"runs": []}
    runs = results["runs"]
    for r in runs:                                # JSON keys are strings
        r["by_length"] = {int(k): v for k, v in r["by_length"].items()}
    done = {(r["model"], r["task"], r["positional"], r["seed"]) for r in runs}
    for model_kind in args.models if not args.table else ():
        for task in args.tasks:
            for positional in args.positionals:
                for seed in args.seeds:
                    if (model_kind, task, positional, seed) in done:
                        continue
                    run = run_one(model_kind, task, positional, seed, args)
                    runs.append(run)
                    print(f"{model_kind} {task} {positional} seed {seed}: "
                          f"{'solved at step ' + str(run['best_step']) if run['solved'] else 'not solved'}, "
                          f"{run['seconds']:.0f} s", flush=True)
                    results.update(numpy=np.__version__, machine=describe(), commit=commit(),
                                   per_length=args.per_length)
                    args.out.parent.mkdir(parents=True, exist_ok=True)
                    args.out.write_text(json.dumps(results, indent=1))
    table = header(results) + summary_table(runs, runs[0]["trained_max_len"] if runs else 16)
    print(table)
    args.out.with_suffix(".md").write_text(table + "\n")
    if args.figure is not None and runs:
        draw(runs, args.figure)
    return runs


if __name__ == "__main__":
    main()
