"""How the reference run's recipe was chosen: candidate recipes trained on several seeds, judged
at every length all along.

    python benchmarks/recipe_sweep.py --recipes first chosen --seeds 0 1 2 3 4
    python benchmarks/recipe_sweep.py --table          # the table of whatever results exist

Unlike ``train``, a sweep run never stops early: it trains for ``--steps`` steps and evaluates
every ``--every`` steps on 200 sequences of each length 1..16, so a table can say both when a
recipe first solves the task (exact match >= 99.5% overall and >= 99% at every length) and
whether it *stays* solved. Exact match is computed under teacher forcing, in one batched
forward pass per length: the argmax at every position of a sequence equals the label exactly
when greedy decoding reproduces the whole answer (if every teacher-forced argmax is right,
greedy decoding follows the very same prefix at every step; if one is wrong, greedy decoding
goes wrong there or earlier), so the figure is greedy exact match, ~5x cheaper. One result
file per (recipe, seed) in ``benchmarks/results/recipe_sweep/``; existing files are kept, so
an interrupted sweep continues where it stopped.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent)]

from tinytransformer import optim  # noqa: E402
from tinytransformer.nn.loss import CrossEntropyLoss  # noqa: E402
from tinytransformer.tasks import PAD, make_batch  # noqa: E402
from tinytransformer.train_config import TrainConfig  # noqa: E402
from machine import commit, describe, stated  # noqa: E402

train_module = importlib.import_module("tinytransformer.train")

OUT = HERE / "results" / "recipe_sweep"
SWEEP_SEED = 987654             # the per-length evaluation sets of the sweep
PER_LENGTH = 200

# name -> TrainConfig fields (the rest: the defaults of the reference run)
RECIPES = {
    "first": dict(lr=2e-3, schedule="inverse_sqrt", warmup=100, clip=None, label_smoothing=0.0),
    "cos-1e-3-w200-h1500": dict(lr=1e-3, schedule="cosine", warmup=200, decay_steps=1500,
                                min_lr=0.05 * 1e-3, clip=1.0, label_smoothing=0.0),
    "cos-2e-3-w100-h1000": dict(lr=2e-3, schedule="cosine", warmup=100, decay_steps=1000,
                                min_lr=0.05 * 2e-3, clip=1.0, label_smoothing=0.0),
    "cos-2e-3-w100-h1000-ls0.1": dict(lr=2e-3, schedule="cosine", warmup=100, decay_steps=1000,
                                      min_lr=0.05 * 2e-3, clip=1.0, label_smoothing=0.1),
    "cos-1.5e-3-w100-h1000": dict(lr=1.5e-3, schedule="cosine", warmup=100, decay_steps=1000,
                                  min_lr=0.05 * 1.5e-3, clip=1.0, label_smoothing=0.0),
    "cos-1.5e-3-w100-h1000-ls0.1": dict(lr=1.5e-3, schedule="cosine", warmup=100, decay_steps=1000,
                                        min_lr=0.05 * 1.5e-3, clip=1.0, label_smoothing=0.1),
    "cos-2e-3-w100-h800-ls0.1": dict(lr=2e-3, schedule="cosine", warmup=100, decay_steps=800,
                                     min_lr=0.05 * 2e-3, clip=1.0, label_smoothing=0.1),
    "b128-cos-2e-3-w100-h800": dict(batch_size=128, lr=2e-3, schedule="cosine", warmup=100,
                                    decay_steps=800, min_lr=0.05 * 2e-3, clip=1.0, label_smoothing=0.0),
}


def per_length_sets(config, vocab) -> list:
    rng = np.random.default_rng(SWEEP_SEED)
    return [make_batch(config.task, vocab, PER_LENGTH, L, L, rng)
            for L in range(config.min_len, config.max_len + 1)]


def exact_match_by_length(model, sets) -> list[float]:
    """Greedy exact match of each set, computed as 'every teacher-forced argmax is right'."""
    model.eval()
    out = []
    for batch in sets:
        predicted = model(batch.src, batch.tgt_in).argmax(-1)                     # (B, Tt)
        out.append(float(((predicted == batch.labels) | (batch.labels == PAD)).all(1).mean()))
    model.train()
    return out


def sweep_run(name: str, seed: int, steps: int, every: int) -> dict:
    config = train_module.TrainConfig(seed=seed, steps=steps, **RECIPES[name])
    vocab = train_module.task_vocab(config)
    model_rng, data_rng = train_module.seeded_generators(seed)
    model = train_module.MODEL_KINDS[config.model](train_module.default_model_config(config), rng=model_rng)
    opt = train_module.build_optimizer(config, model)
    schedule = train_module.build_schedule(config)
    crit = CrossEntropyLoss(ignore_index=PAD, label_smoothing=config.label_smoothing)
    sets = per_length_sets(config, vocab)
    evals, start = [], time.perf_counter()
    with threadpool_limits(1, user_api="blas"):
        for step in range(1, steps + 1):
            batch = train_module.draw_batch(config, vocab, data_rng)
            model.zero_grad()
            crit(model(batch.src, batch.tgt_in), batch.labels)
            model.backward(crit.backward())
            if config.clip:
                optim.clip_grad_norm(model, config.clip)
            opt.lr = schedule(step)
            opt.step()
            if step % every == 0:
                evals.append([step, exact_match_by_length(model, sets)])
    return {"recipe": name, "config": config.to_dict(), "seed": seed, "evals": evals,
            "seconds": time.perf_counter() - start, "machine": describe(), "commit": commit()}


def first_solved(evals, overall=TrainConfig.target, worst=TrainConfig.target_worst):
    """The first evaluated step that passes the stop rule of ``train`` (its defaults)."""
    for step, by_length in evals:
        if np.mean(by_length) >= overall and min(by_length) >= worst:
            return step
    return None


def swing(evals, level=0.95):
    reached = False
    for step, by_length in evals:
        if np.mean(by_length) >= level:
            reached = True
        elif reached:
            return step
    return None


def is_default(name: str) -> bool:
    """Whether a recipe is the one TrainConfig uses by default (the reference run's)."""
    default = train_module.TrainConfig()
    return all(getattr(default, key) == value for key, value in RECIPES[name].items())


def where(result: dict) -> str:
    """Where a run was measured; the first runs recorded it in one sentence, without versions."""
    if "machine" in result:
        return stated(result["machine"], result["commit"])
    return f"Measured on {result['measured']}; NumPy version not recorded."


def table(results: list[dict]) -> str:
    lines = [" ".join(sorted({where(r) for r in results})), "",
             "| recipe | seeds | solved | first solved: median / worst step | swings below 95% "
             "| after solving: lowest exact match / lowest worst length |",
             "|---|---:|---:|---:|---:|---:|"]
    for name in RECIPES:
        runs = [r for r in results if r["recipe"] == name]
        if not runs:
            continue
        stops = [first_solved(r["evals"]) for r in runs]
        solved = [s for s in stops if s is not None]
        after = [(np.mean(b), min(b)) for r, s in zip(runs, stops) if s for step, b in r["evals"] if step > s]
        label = f"**{name}** (the default)" if is_default(name) else name
        lines.append(f"| {label} | {len(runs)} | {len(solved)} | "
                     + (f"{np.median(solved):.0f} / {max(solved)}" if solved else "-")
                     + f" | {sum(swing(r['evals']) is not None for r in runs)} | "
                     + (f"{min(a for a, _ in after):.3f} / {min(w for _, w in after):.3f}" if after else "-")
                     + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--every", type=int, default=50)
    parser.add_argument("--table", action="store_true",
                        help="only write the table of existing results (benchmarks/results/recipe_sweep.md)")
    args = parser.parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)
    if not args.table:
        for seed in args.seeds:
            for name in args.recipes:
                path = OUT / f"{name}_s{seed}.json"
                if not path.exists():
                    result = sweep_run(name, seed, args.steps, args.every)
                    path.write_text(json.dumps(result) + "\n")
                    print(f"{name} seed {seed}: first solved at {first_solved(result['evals'])}",
                          file=sys.stderr, flush=True)
    text = table([json.loads(p.read_text()) for p in sorted(OUT.glob("*.json"))])
    OUT.with_suffix(".md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
