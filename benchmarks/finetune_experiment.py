"""From a model trained on one task to another: full fine-tuning, a frozen encoder, LoRA of
ranks 1, 2, 4, 8, and training from scratch, over seeds.

    python benchmarks/finetune_experiment.py                      # copy -> reverse, reverse -> sort
    python benchmarks/finetune_experiment.py --seeds 0 --pairs copy:reverse
    python benchmarks/finetune_experiment.py --costs              # each method's step time (quiet machine)
    python benchmarks/finetune_experiment.py --table              # the table and figure from the results
    python benchmarks/finetune_experiment.py --quick              # tiny sizes: a smoke test

For each seed and each pair OLD:NEW, a base model is trained on OLD with the default recipe
(``TrainConfig``) until it solves it; then each method trains on NEW, from that base (or from
scratch), with the default recipe, the method's peak learning rate (``LEARNING_RATES``; a
choice from a few seed-0 trials, not a sweep; ``--lr METHOD=VALUE`` overrides it) and a step
budget (``--budget``), until NEW is solved or the budget ends. The frozen-encoder and LoRA
runs, which train slowly, get a cosine stretched over the whole budget (``decay_steps`` =
budget) instead of the reference's 800 steps.

Recorded per run: steps and seconds to solve (None if unsolved), trainable parameters, the
best held-out exact match on NEW, and what the kept model still knows of OLD: its exact match
on OLD's held-out set, next to the *agreement floor*, the fraction of those sequences whose
OLD and NEW targets are the same (copy and reverse agree only on palindromes: a model that
solves NEW cannot score above that on OLD, so "forgetting" is forced by the tasks and that column
tells no method from another), its teacher-forced loss and token accuracy on OLD at the positions
where OLD's and NEW's targets agree (what it can keep of OLD without failing NEW), and how
far its weights moved, ||W - W0|| / ||W0|| over every base weight (a LoRA model merged first).

``--costs`` measures instead, on a quiet machine, the median time of one training step
(forward, backward, clipping, Adam) of the reference model per method, with the package's
default threads and with one: all trainable, the encoder frozen (its weight gradients are
skipped; the backward still crosses it to reach the source embedding), the encoder and the
source embedding frozen (the backward stops above the encoder), LoRA of each rank.

Results: ``benchmarks/results/finetune.json``, the table ``finetune.md`` beside it, and
``figures/finetune.png``.
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))                  # the package of this checkout

from tinytransformer import (EOS, Adam, CrossEntropyLoss, Transformer, TransformerConfig,  # noqa: E402
                             PAD, add_lora, merge_lora, threads)
from machine import commit, cpu_name, stated  # noqa: E402
from tinytransformer.finetune import freeze  # noqa: E402
from tinytransformer.nn.lora import lora_layers  # noqa: E402
from tinytransformer.step import train_step  # noqa: E402
from tinytransformer.tasks import get_task, make_batch  # noqa: E402
from tinytransformer.train import TrainConfig, evaluate, held_out, task_vocab, train  # noqa: E402

# method -> what it adds to the TrainConfig of the new run
METHODS = {
    "scratch": {},
    "full": {"init_from": True},
    "frozen encoder": {"init_from": True, "freeze": ("encoder",)},
    # as measured in the table: the LoRA paper's w_q and w_v, alpha = r (the command line's defaults
    # since are every projection and alpha 16: benchmarks/lora_defaults.py)
    **{f"LoRA r={r}": {"init_from": True, "lora_rank": r, "lora_targets": ("w_q", "w_v"), "lora_alpha": None}
       for r in (1, 2, 4, 8)},
}
# a fine-tuned model starts close: a smaller rate than from scratch; adapters start at zero
LEARNING_RATES = {"scratch": 2e-3, "full": 5e-4, "frozen encoder": 2e-3,
                  **{f"LoRA r={r}": 1e-2 for r in (1, 2, 4, 8)}}
LONG_SCHEDULE = {"frozen encoder", *(f"LoRA r={r}" for r in (1, 2, 4, 8))}
QUICK_MODEL = {"d_model": 16, "n_heads": 2, "d_ff": 32, "n_encoder_layers": 1, "n_decoder_layers": 1}
QUICK_TASK = {"max_len": 4, "steps": 20, "eval_every": 10, "eval_size": 40}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--pairs", nargs="+", default=["copy:reverse", "reverse:sort"])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--lr", nargs="*", default=[], metavar="METHOD=VALUE")
    parser.add_argument("--budget", type=int, default=1500, help="step budget of every fine-tuning run")
    parser.add_argument("--threads", type=int, default=None,
                        help="threads (default: the package's; 1 to share the machine with another job)")
    parser.add_argument("--costs", action="store_true",
                        help="only measure each method's step time (quiet machine) into --out")
    parser.add_argument("--table", action="store_true", help="only redraw the table and figure from --out")
    parser.add_argument("--quick", action="store_true", help="tiny model and budget: a smoke test")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "finetune.json")
    parser.add_argument("--figure", type=Path, default=ROOT / "figures" / "finetune.png")
    return parser.parse_args(argv)


def run(task: str, seed: int, quick: bool, out_dir=None, **fields):
    config = TrainConfig(task=task, seed=seed, **{**(QUICK_TASK if quick else {}), **fields})
    model_config = None
    if config.init_from is None:
        model_config = TransformerConfig(vocab_size=task_vocab(config).size,
                                         **(QUICK_MODEL if quick else {}))
    return config, train(config, model_config, out_dir=out_dir, stream=io.StringIO())


def agreement(old: str, new: str, data) -> float:
    """Fraction of the held-out sources on which the OLD and NEW tasks give the same target."""
    lengths = data.src_mask.sum(1)
    same = [np.array_equal(get_task(old)(src[:n]), get_task(new)(src[:n]))
            for src, n in zip(data.src, lengths)]
    return float(np.mean(same))


def agreeing_positions(old_data, new_data) -> np.ndarray:
    """(B, Tt) bool: the symbol positions (not EOS, not padding) where OLD's and NEW's targets of the
    same held-out sources are the same token."""
    if not np.array_equal(old_data.src, new_data.src):
        raise ValueError("agreeing_positions: old_data and new_data must hold the same sources "
                         "(held-out sets of two tasks drawn with the same seed and lengths)")
    labels = old_data.labels
    return (labels == new_data.labels) & (labels != PAD) & (labels != EOS)


def old_where_agreeing(model, old_data, new_data) -> dict:
    """What the model still knows of OLD where knowing it does not conflict with NEW: its teacher-forced
    loss (nats per token) and token accuracy on OLD's held-out set, at the positions where OLD's and
    NEW's targets agree. Unlike exact match on OLD, which a model that solves NEW cannot lift above
    the agreement floor, these can differ between models that all solve NEW."""
    where = agreeing_positions(old_data, new_data)
    model.eval()
    logits = model(old_data.src, old_data.tgt_in).astype(np.float64)      # (B, Tt, V)
    logits -= logits.max(-1, keepdims=True)
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    picked = np.take_along_axis(log_probs, old_data.labels[..., None], -1)[..., 0]      # (B, Tt)
    right = logits.argmax(-1) == old_data.labels
    return {"loss": float(-picked[where].mean()), "accuracy": float(right[where].mean()),
            "positions": int(where.sum())}


def drift(base, model) -> float:
    """||W - W0|| / ||W0|| over every weight of the base (the model's adapters merged first)."""
    plain = merge_lora(copy.deepcopy(model)) if any(lora_layers(model)) else model
    before = dict((name, p) for name, p, _ in base.named_parameters())
    after = dict((name, p) for name, p, _ in plain.named_parameters())
    moved = sum(float(np.sum((after[name] - w) ** 2)) for name, w in before.items())
    size = sum(float(np.sum(w ** 2)) for w in before.values())
    return (moved / size) ** 0.5


COST_METHODS = ("full", "frozen encoder", "frozen encoder and source embedding",
                *(f"LoRA r={r}" for r in (1, 2, 4, 8)))


def step_costs(repeats: int) -> dict:
    """Median seconds of one training step of the reference model (batch 64, lengths 1..16), per
    method, with the package's default threads (BLAS on one, weight gradients on a second) and
    with one thread. The methods take turns, one step each, so a drift of the machine's speed
    falls on all of them alike."""
    config = TrainConfig()
    vocab = task_vocab(config)
    batch = make_batch(config.task, vocab, 64, 1, 16, np.random.default_rng(0))
    steps = {}
    for method in COST_METHODS:
        model = Transformer(TransformerConfig(vocab_size=vocab.size), rng=np.random.default_rng(0))
        if method.startswith("frozen encoder"):
            freeze(model, ["encoder"])                 # as --freeze encoder: the source embedding trains
            if method.endswith("source embedding"):
                model.src_embed.requires_grad_(False)  # nothing below the encoder trains: backward stops
        elif method.startswith("LoRA"):
            add_lora(model, int(method.split("=")[1]), rng=np.random.default_rng(1))
        crit = CrossEntropyLoss(ignore_index=PAD, label_smoothing=config.label_smoothing)
        steps[method] = (model, crit, Adam(model, lr=1e-4))
    costs = {method: {"trainable": model.num_parameters(trainable_only=True),
                      "parameters": model.num_parameters()} for method, (model, _, _) in steps.items()}
    for key, n in (("seconds", None), ("seconds_one_thread", 1)):
        samples = {method: [] for method in steps}
        with threads(n):
            for _ in range(repeats):
                for method, (model, crit, optim) in steps.items():
                    t0 = time.perf_counter()
                    train_step(model, crit, optim, batch, clip=config.clip)
                    samples[method].append(time.perf_counter() - t0)
        for method in steps:
            costs[method][key] = float(np.median(samples[method]))
    return costs


def experiment(args) -> dict:
    rates = dict(LEARNING_RATES)
    for item in args.lr:
        method, _, value = item.partition("=")
        if method not in METHODS:
            raise SystemExit(f"--lr: expected METHOD=VALUE with METHOD among {list(METHODS)}, got {item!r}")
        rates[method] = float(value)
    budget = QUICK_TASK["steps"] if args.quick else args.budget
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for pair in args.pairs:
            old, new = pair.split(":")
            old_config = TrainConfig(task=old, **(QUICK_TASK if args.quick else {}))
            old_data = held_out(old_config)
            new_data = held_out(TrainConfig(task=new, **(QUICK_TASK if args.quick else {})))
            floor = agreement(old, new, old_data)
            for seed in args.seeds:
                base_dir = Path(tmp) / f"{old}-{seed}"
                _, base = run(old, seed, args.quick, out_dir=base_dir)
                for method in args.methods:
                    fields = {**METHODS[method], "lr": rates[method], "steps": budget}
                    if method in LONG_SCHEDULE and not args.quick:
                        fields["decay_steps"] = budget
                    if fields.get("init_from"):
                        fields["init_from"] = str(base_dir)
                    config, result = run(new, seed, args.quick, **fields)
                    solved = result.stopped == "target"
                    kept = old_where_agreeing(result.model, old_data, new_data)
                    runs.append({
                        "pair": pair, "seed": seed, "method": method, "lr": rates[method],
                        "decay_steps": config.decay_steps, "budget": budget,
                        "base_steps": base.steps, "base_solved": base.stopped == "target",
                        "trainable": result.model.num_parameters(trainable_only=True),
                        "solved": solved, "steps": result.best["step"] if solved else None,
                        "seconds": result.history["best"]["seconds"] if solved else None,
                        "new_exact_match": result.best["exact_match"],
                        "old_exact_match": evaluate(result.model, old_data)["exact_match"],
                        "agreement_floor": floor,
                        "old_loss_agreeing": kept["loss"], "old_accuracy_agreeing": kept["accuracy"],
                        "agreeing_positions": kept["positions"],
                        "weight_drift": None if method == "scratch" else drift(base.model, result.model),
                    })
                    print(json.dumps(runs[-1]), flush=True)
    return {"machine": machine(), "quick": args.quick, "threads": args.threads, "learning_rates": rates,
            "runs": runs}


def machine() -> dict:
    return {"platform": platform.platform(), "processor": cpu_name(),
            "python": platform.python_version(), "numpy": np.__version__, "commit": commit()}


def summary_table(results: dict) -> str:
    """One row per pair and method, over its seeds (steps: median and range over the solved ones)."""
    costs = results.get("step_costs", {})
    # results from before the measure was recorded have no such column
    agreeing = any("old_loss_agreeing" in r for r in results["runs"])
    lines = ["| pair | method | peak lr | trained parameters | solved | steps to solve | seconds to solve | "
             "new task (best) | "
             "step time / full (2 threads / 1) | old task after | agreement floor | "
             + ("old loss / accuracy where the tasks agree | " if agreeing else "") + "weight drift |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|" + ("---:|" if agreeing else "") + "---:|"]
    for pair in dict.fromkeys(r["pair"] for r in results["runs"]):
        for method in dict.fromkeys(r["method"] for r in results["runs"]):
            rs = [r for r in results["runs"] if r["pair"] == pair and r["method"] == method]
            if not rs:
                continue
            steps = sorted(r["steps"] for r in rs if r["solved"])
            steps_text = "-" if not steps else (f"{int(np.median(steps))}" if len(steps) == 1 else
                                                f"{int(np.median(steps))} ({steps[0]}-{steps[-1]})")
            seconds = [r["seconds"] for r in rs if r["solved"]]
            seconds_text = f"{np.median(seconds):.0f}" if seconds else "-"
            cost, full = costs.get("full" if method == "scratch" else method), costs.get("full")
            cost_text = (f"{cost['seconds'] / full['seconds']:.2f} / "
                         f"{cost['seconds_one_thread'] / full['seconds_one_thread']:.2f}" if cost else "-")
            drifts = [r["weight_drift"] for r in rs if r["weight_drift"] is not None]
            lines.append(
                f"| {pair.replace(':', ' -> ')} | {method} | {rs[0]['lr']:g} | {rs[0]['trainable']:,} | "
                f"{len(steps)}/{len(rs)} | {steps_text} | {seconds_text} | "
                f"{np.mean([r['new_exact_match'] for r in rs]):.3f} | {cost_text} | "
                f"{np.mean([r['old_exact_match'] for r in rs]):.3f} | {rs[0]['agreement_floor']:.3f} | "
                + (f"{np.mean([r['old_loss_agreeing'] for r in rs]):.3f} / "
                   f"{np.mean([r['old_accuracy_agreeing'] for r in rs]):.3f} | " if agreeing else "")
                + (f"{np.mean(drifts):.3f} |" if drifts else "- |"))
    return "\n".join(lines)


FIGURE_ROWS = (("steps", "steps to solve (x: not solved\nin the budget, drawn at it)"),
               ("old_exact_match", "old task exact match after\n(dotted: agreement floor)"),
               ("old_loss_agreeing", "old task loss where the\ntwo tasks agree (nats/token)"),
               ("weight_drift", "weight drift from the base\n||W - W0|| / ||W0||"))


def draw(results: dict):
    """The experiment's figure (a matplotlib Figure, no pyplot): one column per pair, one row per
    measure the results hold, one point per run, the seeds side by side."""
    from matplotlib.figure import Figure
    pairs = list(dict.fromkeys(r["pair"] for r in results["runs"]))
    methods = list(dict.fromkeys(r["method"] for r in results["runs"]))
    rows = [(key, label) for key, label in FIGURE_ROWS if any(key in r for r in results["runs"])]
    fig = Figure(figsize=(5 * len(pairs), 3 * len(rows)))
    axes = fig.subplots(len(rows), len(pairs), squeeze=False)
    for column, pair in enumerate(pairs):
        runs = [r for r in results["runs"] if r["pair"] == pair]
        for row, (key, label) in enumerate(rows):
            ax = axes[row, column]
            for i, method in enumerate(methods):
                for j, r in enumerate(r for r in runs if r["method"] == method):
                    x = i + 0.12 * (j - 1)                     # the seeds side by side
                    if key == "steps" and r["steps"] is None:
                        ax.plot(x, r["budget"], "x", color=f"C{i}")
                    elif r.get(key) is not None:            # scratch has no base to drift from
                        ax.plot(x, r[key], "o", color=f"C{i}")
            if key == "steps":
                ax.axhline(runs[0]["budget"], color="gray", lw=0.8, ls=":")
                ax.set_ylim(0, runs[0]["budget"] * 1.08)
            elif key == "old_exact_match":
                ax.axhline(runs[0]["agreement_floor"], color="gray", lw=0.8, ls=":")
                ax.set_ylim(-0.03, 1.03)
            else:
                ax.set_ylim(0, None)
            ax.set_xticks(range(len(methods)), methods, rotation=30, ha="right")
            ax.set_ylabel(label)
            ax.set_title(f"{pair.replace(':', ' -> ')} (seeds {sorted({r['seed'] for r in runs})})")
    fig.tight_layout()
    return fig


def figure(results: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    draw(results).savefig(path, dpi=100)


def main(argv=None) -> None:
    args = parse_args(argv)
    previous = json.loads(args.out.read_text()) if args.out.is_file() else {}
    with threads(args.threads):
        if args.table:
            results = previous
        elif args.costs:
            results = {**previous, "step_costs": step_costs(3 if args.quick else 60),
                       "step_costs_machine": machine()}
        else:
            results = {**experiment(args), **{k: v for k, v in previous.items() if k.startswith("step_costs")}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    if "runs" in results:
        budgets = sorted({r["budget"] for r in results["runs"]})
        seeds = sorted({r["seed"] for r in results["runs"]})
        m = results["machine"]
        agreeing = (", old loss / accuracy where the tasks agree (teacher-forced, at the positions whose OLD "
                    "and NEW targets are the same symbol)"
                    if any("old_loss_agreeing" in r for r in results["runs"]) else "")
        header = (stated(f"{m['processor']}, Python {m['python']}, NumPy {m['numpy']}", m.get("commit"))
                  + f" Seeds {seeds}, step budget {budgets}. Steps: median (range) over the seeds that solved "
                  f"the new task; seconds: median wall time to the kept model over the same runs (it depends "
                  f"on the threads and the machine's load); new task (best): the kept model's held-out exact match; it, old task after "
                  f"(exact match, held below the agreement floor plus NEW's error rate for any model: it tells "
                  f"no method from another){agreeing} "
                  f"and weight drift: mean over the seeds; step time: median "
                  f"of a training step of the reference model, relative to full fine-tuning, with the package's "
                  f"default threads and with one"
                  + (f" ({results['step_costs']['full']['seconds'] * 1e3:.1f} and "
                     f"{results['step_costs']['full']['seconds_one_thread'] * 1e3:.1f} ms)"
                     if "step_costs" in results
                     else " (not measured yet: --costs)") + ".\n\n")
        table = summary_table(results)
        args.out.with_suffix(".md").write_text(header + table + "\n")
        print(header + table)
        if not args.costs:              # the figure shows the runs, which --costs leaves as they were
            figure(results, args.figure)
    print(f"wrote {args.out}" + ("" if args.costs else f", its table and {args.figure}"))


if __name__ == "__main__":
    main()
