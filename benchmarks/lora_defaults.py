"""Which LoRA defaults make `train --init-from RUN --lora-rank 4` solve what the README shows.

    python benchmarks/lora_defaults.py --bases /tmp/lora --seeds 0 1         # every candidate
    python benchmarks/lora_defaults.py --bases /tmp/lora --candidates defaults --seeds 0 1 2 3 4
    python benchmarks/lora_defaults.py --table                               # the table only

The base models are ``BASES/<old task>-<seed>``, the runs of
``tinytransformer train --task OLD --seed S --out BASES/OLD-S`` (the reference recipe); one
that is missing is trained here with the same configuration. Each candidate is a list of
command-line options added to

    tinytransformer train --init-from BASES/OLD-S --task NEW --lora-rank 4 --seed S

and the run is configured by the command line's own code (``cli.train.train_configs``), so the
candidate ``defaults`` (no options) measures exactly what a learner gets. Each run trains with
the stop rule of any run (held-out exact match >= 0.995 overall and at every length, an
evaluation every 100 steps) until it solves the new task or its budget ends; its kept model is
then also decoded on 3,200 fresh sequences the stop rule never saw.

A run is identified by its pair, its seed and the whole configuration the options resolve to,
so two candidates that resolve alike (``defaults`` and the candidate the defaults were chosen
from) share their runs, and a run already in ``--out`` is not run again. Results:
``benchmarks/results/lora_defaults.json`` (every run, with the commit and the machine) and the
table ``lora_defaults.md`` beside it.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))                  # the package of this checkout

from machine import cpu_name  # noqa: E402
from tinytransformer import threads  # noqa: E402
from tinytransformer.cli.main import build_parser  # noqa: E402
from tinytransformer.cli.train import train_configs  # noqa: E402
from tinytransformer.train import TrainConfig, evaluate, held_out, train  # noqa: E402

PAIRS = ("copy:reverse", "reverse:sort")
FRESH_SEED = 4242                              # held-out sequences the stop rule never saw
ATTENTION = ("w_q", "w_k", "w_v", "w_o")
EVERY_LINEAR = (*ATTENTION, "linear1", "linear2", "linear3")
# name -> the options added to `train --init-from ... --lora-rank R`; the candidates other than the
# defaults get a budget of 1,500 steps (the defaults solved every run measured within 1,200)
SHORTER = ["--steps", "1500"]
CANDIDATES = {
    "defaults": [],
    "before: w_q w_v, alpha = r": ["--lora-targets", "w_q", "w_v", "--lora-alpha", "{rank}", *SHORTER],
    "w_q w_v, alpha 16": ["--lora-targets", "w_q", "w_v", "--lora-alpha", "16", *SHORTER],
    "attention, alpha 16": ["--lora-targets", *ATTENTION, "--lora-alpha", "16", *SHORTER],
    "every linear, alpha 16": ["--lora-targets", *EVERY_LINEAR, "--lora-alpha", "16"],
    "every linear, alpha 8": ["--lora-targets", *EVERY_LINEAR, "--lora-alpha", "8", *SHORTER],
    "every linear, alpha 32": ["--lora-targets", *EVERY_LINEAR, "--lora-alpha", "32", *SHORTER],
}
# fields that differ between runs of one candidate, left out of its identity
PER_RUN = ("init_from", "task", "seed")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bases", type=Path, default=Path("/tmp/lora"),
                        help="the base runs' directory (BASES/<task>-<seed>; missing ones are trained)")
    parser.add_argument("--candidates", nargs="+", default=list(CANDIDATES), choices=list(CANDIDATES))
    parser.add_argument("--pairs", nargs="+", default=list(PAIRS), metavar="OLD:NEW")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--rank", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1,
                        help="threads per run (default 1: the machine is shared)")
    parser.add_argument("--table", action="store_true", help="only write the table from --out")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "lora_defaults.json")
    return parser.parse_args(argv)


def command_line(base: Path, new: str, seed: int, rank: int, options: list[str]) -> list[str]:
    return ["train", "--init-from", str(base), "--task", new, "--lora-rank", str(rank),
            "--seed", str(seed), *(option.format(rank=rank) for option in options)]


def resolved(argv: list[str]) -> TrainConfig:
    """The TrainConfig the command line makes of ``argv``, as `tinytransformer train` would."""
    args = build_parser().parse_args(argv + ["--out", os.devnull])
    return train_configs(args)[0]


def identity(config: TrainConfig) -> dict:
    """What a run's configuration is, apart from its pair and seed."""
    return {key: value for key, value in config.to_dict().items() if key not in PER_RUN}


def base_run(bases: Path, task: str, seed: int) -> Path:
    """BASES/<task>-<seed>: trained with the reference recipe if it is not there yet."""
    out = bases / f"{task}-{seed}"
    if not (out / "best.npz").is_file():
        print(f"training the base {out}", flush=True)
        train(TrainConfig(task=task, seed=seed), out_dir=out, stream=io.StringIO())
    return out


def measure(argv: list[str], config: TrainConfig) -> dict:
    t0 = time.perf_counter()
    result = train(config, stream=io.StringIO())
    seconds = time.perf_counter() - t0
    fresh = evaluate(result.model, held_out(config, seed=FRESH_SEED))
    return {"argv": argv, "solved": result.stopped == "target", "steps": result.steps,
            "best": {key: result.best[key] for key in ("step", "exact_match", "worst", "worst_length")},
            "evals": [[e["step"], e["exact_match"], e["worst"]] for e in result.history["eval"]],
            "fresh": {"exact_match": fresh["exact_match"], "worst": fresh["worst"],
                      "worst_length": fresh["worst_length"]},
            "trainable": result.model.num_parameters(trainable_only=True),
            "seconds": round(seconds, 1)}


def commit() -> str:
    git = ["git", "-C", str(ROOT)]
    head = subprocess.run(git + ["rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(git + ["status", "--porcelain", "--", "tinytransformer", "benchmarks",
                                  ":!benchmarks/results"],           # the results this script writes
                           capture_output=True, text=True)
    return head.stdout.strip() + (" (+ uncommitted changes)" if dirty.stdout.strip() else "")


def machine(n_threads: int) -> dict:
    return {"processor": cpu_name(), "platform": platform.platform(), "python": platform.python_version(),
            "numpy": np.__version__, "threads": n_threads}


def experiment(args, results: dict) -> None:
    """Run every (candidate, pair, seed) not in ``results`` yet, saving after each run."""
    for name in args.candidates:
        for pair in args.pairs:
            old, new = pair.split(":")
            for seed in args.seeds:
                base = base_run(args.bases, old, seed)
                argv = command_line(base, new, seed, args.rank, CANDIDATES[name])
                config = resolved(argv)
                key = {"pair": pair, "seed": seed, "config": identity(config)}
                if any({k: run[k] for k in key} == key for run in results["runs"]):
                    continue
                with threads(args.threads):
                    run = {"candidate": name, **key, **measure(argv, config), "commit": commit(),
                           "machine": machine(args.threads)}
                results["runs"].append(run)
                args.out.write_text(json.dumps(results, indent=1) + "\n")
                print(f"{name} | {pair} | seed {seed}: solved {run['solved']} at step {run['best']['step']}, "
                      f"exact match {run['best']['exact_match']:.4f}, worst {run['best']['worst']:.3f} "
                      f"(fresh {run['fresh']['exact_match']:.4f} / {run['fresh']['worst']:.3f}), "
                      f"{run['seconds']:.0f} s", flush=True)


def summary_table(results: dict) -> str:
    """One row per configuration and pair, over the seeds measured, named by its candidates."""
    lines = ["| candidate | pair | rank | targets | alpha | lr (peak, decay to step); budget | trained | "
             "solved | steps to solve | best exact match (mean) | worst length (min) | fresh: exact match "
             "(min) / worst length (min) |",
             "|---|---|---:|---|---:|---|---:|---:|---:|---:|---:|---|"]
    configs = {json.dumps(r["config"], sort_keys=True): r["config"] for r in results["runs"]}
    for config in configs.values():
        names = sorted({r["candidate"] for r in results["runs"] if r["config"] == config} - {"defaults"})
        defaults = identity(TrainConfig(task="reverse", init_from="BASE", lora_rank=config["lora_rank"]))
        name = " = ".join(names)
        # a field recorded before it existed has its default: the run ran with it
        if set(config) <= set(defaults) and all(config.get(k, v) == v for k, v in defaults.items()):
            name = f"{name} (the defaults)" if name else "the defaults"
        for pair in PAIRS:
            runs = sorted((r for r in results["runs"] if r["pair"] == pair and r["config"] == config),
                          key=lambda r: r["seed"])
            if not runs:
                continue
            steps = sorted(r["best"]["step"] for r in runs if r["solved"])
            steps_text = "-" if not steps else f"{int(np.median(steps))} ({steps[0]}-{steps[-1]})"
            lines.append(
                f"| {name} | {pair.replace(':', ' -> ')} | {config['lora_rank']} | "
                f"{' '.join(config['lora_targets'])} | "
                f"{config['lora_alpha'] if config['lora_alpha'] is not None else config['lora_rank']:g} | "
                f"{config['lr']:g}, {config['schedule']} to {config['decay_steps']}; {config['steps']} | "
                f"{runs[0]['trainable']:,} | "
                f"{len(steps)}/{len(runs)} (seeds {', '.join(str(r['seed']) for r in runs)}) | "
                f"{steps_text} | "
                f"{np.mean([r['best']['exact_match'] for r in runs]):.4f} | "
                f"{min(r['best']['worst'] for r in runs):.3f} | "
                f"{min(r['fresh']['exact_match'] for r in runs):.4f} / "
                f"{min(r['fresh']['worst'] for r in runs):.3f} |")
    return "\n".join(lines)


def header(results: dict) -> str:
    machines = sorted({f"{r['machine']['processor']}, Python {r['machine']['python']}, "
                       f"NumPy {r['machine']['numpy']}, {r['machine']['threads']} thread(s)"
                       for r in results["runs"]})
    commits = ", ".join(sorted({r["commit"] for r in results["runs"]}))
    return (f"Measured on {'; '.join(machines)}; commit {commits} (the runs were made as the "
            f"candidates came).\n\n"
            f"`train --init-from BASE --task NEW --lora-rank R --seed S` plus each candidate's "
            f"options; BASE: the reference recipe's run on the old task, same seed. Solved: held-out exact "
            f"match >= 0.995 overall and at every length 1..16 (3,200 sequences, 200 a length), judged every "
            f"100 steps; steps to solve: median (range) over the solved runs; best: the kept evaluation; "
            f"fresh: the kept model on 3,200 other sequences.\n\n")


def main(argv=None) -> None:
    args = parse_args(argv)
    results = json.loads(args.out.read_text()) if args.out.is_file() else {"runs": []}
    if not args.table:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        experiment(args, results)
    text = header(results) + summary_table(results) + "\n"
    args.out.with_suffix(".md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
