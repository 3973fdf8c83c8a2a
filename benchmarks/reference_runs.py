"""The reference run over many seeds: steps and seconds to solve, NumPy beside its PyTorch peer.

    python benchmarks/run.py --reference-runs                 # reverse, seeds 0-9, both sides
    python benchmarks/reference_runs.py --seeds 0 1 2         # the same, directly
    python benchmarks/reference_runs.py --task copy --seeds 0 1 2 3 4 --no-torch
    python benchmarks/reference_runs.py --model decoder-only --seeds 0 1 2 3 4 --no-torch

Each seed runs ``tinytransformer.train`` with the default recipe (``TrainConfig``: only
the task, the model kind and the seed are set here) until it solves the task: greedy
exact match >= ``target`` overall and >= ``target_worst`` at every length on the held-out
set, evaluated every ``eval_every`` steps. The kept model is then judged again on fresh
sequences it was never evaluated on (``FRESH_PER_LENGTH`` per length, another seed), at
every length. "Swing" marks a run whose exact match fell below 95% at an evaluation after
the first one at or above 95% (what a learner watching the progress would see as a relapse).

The PyTorch peer (``benchmarks/torch_reference.py``, eager, fused Adam) starts from the
NumPy model's initial weights and takes the same batches, learning-rate schedule, clipping
and stop rule (its evaluation: the same held-out set, its own cached greedy decoding).
Float32 rounding differs between the two, so their trajectories part after a few dozen
steps: compare the distributions over seeds, not one seed.

Both sides get ``--threads`` threads (default 2): PyTorch through ``torch.set_num_threads``,
NumPy as ``train`` runs it (its BLAS threads held where it wants them).
Results: ``benchmarks/results/reference_runs[-task][-model].json`` and a figure of held-out
exact match against step for every seed (``figures/reference_runs.png`` for the reference).
"""

from __future__ import annotations

import argparse
import importlib
import io
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT), str(HERE)]          # the package of this checkout, and torch_reference

from tinytransformer.tasks import PAD, eval_set, lm_eval_set  # noqa: E402
from machine import commit, cpu_name, stated  # noqa: E402

# the module, not the function that tinytransformer re-exports under the same name
train_module = importlib.import_module("tinytransformer.train")

FRESH_PER_LENGTH = 500          # sequences per length in the final, fresh judgement
FRESH_SEED = 4242               # not EVAL_SEED: sequences the stop rule never saw
SWING = 0.95
FIRST_LOSSES = 5                # losses of the first steps, kept to show both sides train the same


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(10)))
    parser.add_argument("--task", default="reverse")
    parser.add_argument("--model", default="encoder-decoder", choices=sorted(train_module.MODEL_KINDS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-torch", action="store_true", help="NumPy only")
    parser.add_argument("--out", type=Path, default=None, help="JSON path (default: benchmarks/results/...)")
    parser.add_argument("--figure", type=Path, default=None, help="figure path (default: figures/...)")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke test: lengths 1..3, 40 steps (not a measurement; give --out)")
    parser.add_argument("--table", action="store_true",
                        help="run nothing: write the tables again from every saved result, and "
                             "one table of them all (reference_runs-all.md, in docs/reference-runs.md)")
    return parser.parse_args(argv)


def fresh_judgement(model, config) -> dict:
    """The kept model on FRESH_PER_LENGTH new sequences of every length of training."""
    n = FRESH_PER_LENGTH * (config.max_len - config.min_len + 1)
    make = lm_eval_set if config.model == "decoder-only" else eval_set
    data = make(config.task, train_module.task_vocab(config), n, config.min_len, config.max_len,
                seed=FRESH_SEED)
    scores = train_module.evaluate(model, data)
    return {"exact_match": scores["exact_match"], "worst": scores["worst"],
            "worst_length": scores["worst_length"],
            "by_length": {str(k): v for k, v in scores["by_length"].items()}}


def swing(evals: list[dict]) -> int | None:
    """The step of the first evaluation below SWING after one at or above it, else None."""
    reached = False
    for entry in evals:
        if entry["exact_match"] >= SWING:
            reached = True
        elif reached:
            return entry["step"]
    return None


def numpy_run(config) -> dict:
    """train() with this recipe; the evaluations' time is measured apart."""
    eval_seconds = [0.0]
    evaluate = train_module.evaluate

    def timed_evaluate(*args, **kwargs):
        start = time.perf_counter()
        try:
            return evaluate(*args, **kwargs)
        finally:
            eval_seconds[0] += time.perf_counter() - start

    train_module.evaluate = timed_evaluate
    try:
        result = train_module.train(config, stream=io.StringIO())
    finally:
        train_module.evaluate = evaluate
    evals = [{k: e[k] for k in ("step", "exact_match", "worst", "worst_length")}
             for e in result.history["eval"]]
    return {"seed": config.seed, "solved": result.stopped == "target", "steps": result.steps,
            "seconds": result.seconds, "eval_seconds": eval_seconds[0],
            "train_seconds": result.seconds - eval_seconds[0], "evals": evals, "swing": swing(evals),
            "first_losses": result.history["loss"][:FIRST_LOSSES],
            "fresh": fresh_judgement(result.model, config)}


def torch_scores(model, data) -> dict:
    """Greedy exact match of the PyTorch model on ``data``, overall and per length, as evaluate()."""
    import torch_reference
    import torch
    lengths = data.src_mask.sum(1)
    by_length, exact = {}, 0
    for length in np.unique(lengths):
        rows = np.flatnonzero(lengths == length)
        want = data.labels[rows]
        want = want[:, :int((want != PAD).sum(1).max())]
        src = torch.from_numpy(np.ascontiguousarray(data.src[rows, :int(length)]))
        out = torch_reference.greedy_decode(model, src, want.shape[1]).numpy()
        got = np.full(want.shape, PAD, dtype=np.int64)
        got[:, :out.shape[1]] = out[:, :want.shape[1]]
        right = ((got == want) | (want == PAD)).all(1)
        by_length[int(length)] = float(right.mean())
        exact += int(right.sum())
    worst_length = min(by_length, key=by_length.get)
    return {"exact_match": exact / len(data.labels), "worst": by_length[worst_length],
            "worst_length": worst_length}


def torch_run(config) -> dict:
    """The same recipe with the PyTorch model, from the NumPy model's initial weights."""
    import torch
    import torch_reference
    model_rng, data_rng = train_module.seeded_generators(config.seed)
    vocab = train_module.task_vocab(config)
    np_model = train_module.MODEL_KINDS[config.model](train_module.default_model_config(config),
                                                       rng=model_rng)
    # the recipe's optimizer (fused Adam) and loss (label smoothing); schedule and clipping below
    model, opt, loss_fn = torch_reference.build(vocab.size, lr=config.lr, betas=config.betas,
                                                eps=config.eps, label_smoothing=config.label_smoothing)
    torch_reference.load_numpy_weights(model, np_model)
    schedule = train_module.build_schedule(config)
    eval_data = train_module.held_out(config)
    train_seconds = eval_seconds = 0.0
    evals, step, first_losses = [], 0, []
    solved = False
    while not solved and step < config.steps:
        start = time.perf_counter()
        batch = train_module.draw_batch(config, vocab, data_rng)
        src, tgt_in, labels = (torch.from_numpy(a) for a in (batch.src, batch.tgt_in, batch.labels))
        opt.zero_grad()
        loss = loss_fn(model(src, tgt_in), labels)
        loss.backward()
        if step < FIRST_LOSSES:
            first_losses.append(loss.item())
        if config.clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip)
        step += 1
        for group in opt.param_groups:
            group["lr"] = schedule(step)
        opt.step()
        train_seconds += time.perf_counter() - start
        if step % config.eval_every == 0:
            start = time.perf_counter()
            scores = torch_scores(model, eval_data)
            eval_seconds += time.perf_counter() - start
            evals.append({"step": step, **scores})
            solved = train_module.solved(scores, config)
    return {"seed": config.seed, "solved": solved, "steps": step,
            "seconds": train_seconds + eval_seconds, "eval_seconds": eval_seconds,
            "train_seconds": train_seconds, "evals": evals, "swing": swing(evals),
            "first_losses": first_losses}


def summary(runs: list[dict]) -> dict:
    steps = [r["steps"] for r in runs]
    seconds = [r["seconds"] for r in runs]
    out = {"solved": sum(r["solved"] for r in runs), "runs": len(runs), "swings": sum(r["swing"] is not None for r in runs),
           "steps_median": float(np.median(steps)), "steps_worst": max(steps),
           "seconds_median": float(np.median(seconds)), "seconds_worst": max(seconds),
           "train_seconds_median": float(np.median([r["train_seconds"] for r in runs]))}
    if all("fresh" in r for r in runs):
        out["fresh_exact_match_min"] = min(r["fresh"]["exact_match"] for r in runs)
        out["fresh_worst_length_min"] = min(r["fresh"]["worst"] for r in runs)
    return out


def plot(results: dict, path: Path) -> None:
    """Held-out exact match (top) and its worst length (bottom) against step, each seed a thin
    line, the median over seeds bold (a stopped run keeps its last value)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    sides = [s for s in ("NumPy", "PyTorch") if s in results["runs"]]
    fig, axes = plt.subplots(2, len(sides), figsize=(5.5 * len(sides), 6.5), sharex=True, sharey="row",
                             squeeze=False)
    last = max(e["step"] for side in sides for r in results["runs"][side] for e in r["evals"])
    every = results["recipe"]["eval_every"]
    grid = np.arange(every, last + 1, every)
    for col, side in enumerate(sides):
        for row, key in enumerate(("exact_match", "worst")):
            ax = axes[row, col]
            curves = []
            for r in results["runs"][side]:
                steps = [e["step"] for e in r["evals"]]
                values = [e[key] for e in r["evals"]]
                ax.plot(steps, values, lw=0.8, alpha=0.55)
                curves.append([values[min(np.searchsorted(steps, s), len(values) - 1)] for s in grid])
            ax.plot(grid, np.median(curves, axis=0), lw=2.5, color="black", label="median over seeds")
            target = results["recipe"]["target" if key == "exact_match" else "target_worst"]
            ax.axhline(target, ls="--", lw=0.8, color="gray")
            ax.set_ylim(0, 1.01)
            ax.grid(alpha=0.3)
            if row == 0:
                s = results["summary"][side]
                ax.set_title(f"{side}: solved {s['solved']}/{s['runs']}, steps median "
                             f"{s['steps_median']:.0f}, worst {s['steps_worst']}")
            if row == 1:
                ax.set_xlabel("step")
            if col == 0:
                ax.set_ylabel("held-out exact match" if key == "exact_match"
                              else "exact match at the worst length")
        axes[0, col].legend(loc="lower right")
    fig.suptitle(f"{results['task']} ({results['model']}), {len(results['seeds'])} seeds:"
                 + (" " if len(sides) > 1 else "\n")
                 + "each seed a thin line, the median bold; dashed: the stop rule")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(results: dict) -> str:
    lines = [f"### {results['task']} ({results['model']}): seeds {results['seeds'][0]}-{results['seeds'][-1]}", "",
             stated(results["machine"], results.get("commit")), "",
             "| | solved | swings | steps: median / worst | seconds: median / worst | training s (median) "
             "| fresh exact match: lowest | fresh worst length: lowest |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for side, s in results["summary"].items():
        fresh = (f"{s['fresh_exact_match_min']:.4f} | {s['fresh_worst_length_min']:.3f}"
                 if "fresh_exact_match_min" in s else "n/a | n/a")
        lines.append(f"| {side} | {s['solved']}/{s['runs']} | {s['swings']} | {s['steps_median']:.0f} / "
                     f"{s['steps_worst']} | {s['seconds_median']:.1f} / {s['seconds_worst']:.1f} | "
                     f"{s['train_seconds_median']:.1f} | {fresh} |")
    if "NumPy" in results["summary"] and "PyTorch" in results["summary"]:
        ratio = results["summary"]["NumPy"]["seconds_median"] / results["summary"]["PyTorch"]["seconds_median"]
        lines += ["", f"NumPy / PyTorch, median seconds to solve: {ratio:.2f}"]
    return "\n".join(lines) + "\n"


def combined_table(paths: list[Path]) -> str:
    """One Markdown row per saved result and side, under the line that states where each ran."""
    runs = [json.loads(path.read_text()) for path in paths]
    where = {stated(results["machine"], results.get("commit")) for results in runs}
    lines = [" ".join(sorted(where)), "",
             "| task (model) | side | seeds solved | relapses below 95% | steps: median / worst "
             "| seconds: median / worst | fresh sequences: lowest exact match / lowest at a length |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for results in runs:
        for side, s in results["summary"].items():
            lines.append(f"| {results['task']} ({results['model']}) | {side} | {s['solved']}/{s['runs']} "
                         f"| {s['swings']} | {s['steps_median']:.0f} / {s['steps_worst']} "
                         f"| {s['seconds_median']:.0f} / {s['seconds_worst']:.0f} "
                         + (f"| {s['fresh_exact_match_min']:.4f} / {s['fresh_worst_length_min']:.3f} |"
                            if "fresh_exact_match_min" in s else "| n/a |"))
    return "\n".join(lines) + "\n"


def main(args: argparse.Namespace) -> dict:
    from threadpoolctl import threadpool_info
    if args.table:
        paths = sorted((HERE / "results").glob("reference_runs*.json"),
                       key=lambda path: (path.stem != "reference_runs", path.stem))   # reverse first
        for path in paths:
            path.with_suffix(".md").write_text(markdown(json.loads(path.read_text())))
        text = combined_table(paths)
        (HERE / "results" / "reference_runs-all.md").write_text(text)
        print(text, end="")
        return {}
    quick = dict(max_len=3, steps=40, eval_every=20, eval_size=30) if args.quick else {}
    config = train_module.TrainConfig(task=args.task, model=args.model, **quick)
    with_torch = not args.no_torch
    if with_torch and args.model != "encoder-decoder":
        raise SystemExit("the PyTorch peer is the encoder-decoder model only: add --no-torch")
    if with_torch:
        import torch
        torch.set_num_threads(args.threads)
    blas = [i for i in threadpool_info() if i["user_api"] == "blas"]
    machine = (f"{cpu_name()}, {len(os.sched_getaffinity(0))} cores, "
               f"Python {platform.python_version()}, NumPy {np.__version__} "
               f"({', '.join(sorted({i['internal_api'] + ' ' + i['version'] for i in blas}))})"
               + (f", PyTorch {torch.__version__}" if with_torch else "")
               + f", {args.threads} threads each")
    results = {"task": args.task, "model": args.model, "seeds": args.seeds, "machine": machine,
               "commit": commit(),
               "recipe": config.to_dict(), "runs": {"NumPy": []}}
    if with_torch:
        results["runs"]["PyTorch"] = []
    for seed in args.seeds:
        seeded = train_module.TrainConfig(**{**config.to_dict(), "seed": seed})
        for side, run in (("NumPy", numpy_run), ("PyTorch", torch_run)):
            if side in results["runs"]:
                r = run(seeded)
                results["runs"][side].append(r)
                print(f"{side} seed {seed}: {'solved' if r['solved'] else 'NOT solved'} at step "
                      f"{r['steps']}, {r['seconds']:.1f} s" + (f", swing at {r['swing']}" if r["swing"] else "")
                      + (f"; fresh: {r['fresh']['exact_match']:.4f}, worst length {r['fresh']['worst_length']}:"
                         f" {r['fresh']['worst']:.3f}" if "fresh" in r else ""), file=sys.stderr, flush=True)
    results["summary"] = {side: summary(runs) for side, runs in results["runs"].items()}
    suffix = ("" if args.task == "reverse" else f"-{args.task}") + \
        ("" if args.model == "encoder-decoder" else f"-{args.model}")
    out = args.out or HERE / "results" / f"reference_runs{suffix}.json"
    figure = args.figure or ROOT / "figures" / f"reference_runs{suffix}.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n")
    text = markdown(results)
    out.with_suffix(".md").write_text(text)
    plot(results, figure)
    print(text)
    print(f"wrote {out}, {out.with_suffix('.md')} and {figure}", file=sys.stderr)
    return results


if __name__ == "__main__":
    main(parse_args())
