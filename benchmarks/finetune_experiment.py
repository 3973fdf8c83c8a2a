"""From a model trained on one task to another: full fine-tuning, a frozen encoder, LoRA of
ranks 1, 2, 4, 8, and training from scratch, over seeds.

    python benchmarks/finetune_experiment.py                      # copy -> reverse, reverse -> sort
    python benchmarks/finetune_experiment.py --seeds 0 --pairs copy:reverse
    python benchmarks/finetune_experiment.py --quick              # tiny sizes: a smoke test

For each seed and each pair OLD:NEW, a base model is trained on OLD with the default recipe
(``TrainConfig``) until it solves it; then each method trains on NEW, from that base (or from
scratch), with the default recipe and the method's learning rate (``LEARNING_RATES``, a
choice, not a tuned value; ``--lr METHOD=VALUE`` overrides it), until NEW is solved or the
budget ends. Recorded per run: steps and seconds to solve (None if unsolved), trainable
parameters, the best held-out exact match on NEW, and what the kept model still knows of
OLD (its exact match on OLD's held-out set: forgetting). Also: the time of a forward and
backward pass of the reference model with every weight trainable and with the encoder
frozen (the frozen backward stops before the encoder).

Results: ``benchmarks/results/finetune.json`` and ``figures/finetune.png``.
"""

from __future__ import annotations

import argparse
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

from tinytransformer import CrossEntropyLoss, Transformer, TransformerConfig  # noqa: E402
from tinytransformer.tasks import make_batch  # noqa: E402
from tinytransformer.train import TrainConfig, evaluate, held_out, task_vocab, train  # noqa: E402

# method -> what it adds to the TrainConfig of the new run
METHODS = {
    "scratch": {},
    "full": {"init_from": True},
    "frozen encoder": {"init_from": True, "freeze": ("encoder",)},
    **{f"LoRA r={r}": {"init_from": True, "lora_rank": r} for r in (1, 2, 4, 8)},
}
# a fine-tuned model starts close: a smaller rate than from scratch; adapters start at zero
LEARNING_RATES = {"scratch": 2e-3, "full": 5e-4, "frozen encoder": 5e-4,
                  **{f"LoRA r={r}": 2e-3 for r in (1, 2, 4, 8)}}
QUICK_MODEL = {"d_model": 16, "n_heads": 2, "d_ff": 32, "n_encoder_layers": 1, "n_decoder_layers": 1}
QUICK_TASK = {"max_len": 4, "steps": 20, "eval_every": 10, "eval_size": 40}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--pairs", nargs="+", default=["copy:reverse", "reverse:sort"])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--lr", nargs="*", default=[], metavar="METHOD=VALUE")
    parser.add_argument("--quick", action="store_true", help="tiny model and budget: a smoke test")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "finetune.json")
    parser.add_argument("--figure", type=Path, default=ROOT / "figures" / "finetune.png")
    return parser.parse_args(argv)


def run(task: str, seed: int, quick: bool, out_dir=None, **fields):
    config = TrainConfig(task=task, seed=seed, **(QUICK_TASK if quick else {}), **fields)
    model_config = None
    if config.init_from is None:
        model_config = TransformerConfig(vocab_size=task_vocab(config).size,
                                         **(QUICK_MODEL if quick else {}))
    return config, train(config, model_config, out_dir=out_dir, stream=io.StringIO())


def backward_times(repeats: int) -> dict:
    """Median seconds of forward + backward, reference model, batch 64, all trainable / encoder frozen."""
    config = TrainConfig()
    rng = np.random.default_rng(0)
    batch = make_batch(config.task, task_vocab(config), 64, 1, 16, rng)
    times = {}
    for frozen in (False, True):
        model = Transformer(TransformerConfig(vocab_size=task_vocab(config).size), rng=rng)
        model.encoder.requires_grad_(not frozen)
        model.src_embed.requires_grad_(not frozen)
        crit = CrossEntropyLoss(ignore_index=0)
        samples = []
        for _ in range(repeats):
            model.zero_grad()
            t0 = time.perf_counter()
            crit(model(batch.src, batch.tgt_in), batch.labels)
            model.backward(crit.backward())
            samples.append(time.perf_counter() - t0)
        times["encoder and source embedding frozen" if frozen else "all trainable"] = \
            float(np.median(samples))
    return times


def experiment(args) -> dict:
    rates = dict(LEARNING_RATES)
    for item in args.lr:
        method, _, value = item.partition("=")
        if method not in METHODS:
            raise SystemExit(f"--lr: expected METHOD=VALUE with METHOD among {list(METHODS)}, got {item!r}")
        rates[method] = float(value)
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for pair in args.pairs:
            old, new = pair.split(":")
            for seed in args.seeds:
                base_dir = Path(tmp) / f"{old}-{seed}"
                _, base = run(old, seed, args.quick, out_dir=base_dir)
                for method in args.methods:
                    fields = {**METHODS[method], "lr": rates[method]}
                    if fields.get("init_from"):
                        fields["init_from"] = str(base_dir)
                    config, result = run(new, seed, args.quick, **fields)
                    old_config = TrainConfig(task=old, **(QUICK_TASK if args.quick else {}))
                    solved = result.stopped == "target"
                    runs.append({
                        "pair": pair, "seed": seed, "method": method, "lr": rates[method],
                        "base_steps": base.steps, "base_solved": base.stopped == "target",
                        "trainable": result.model.num_parameters(trainable_only=True),
                        "solved": solved, "steps": result.best["step"] if solved else None,
                        "seconds": result.history["best"]["seconds"] if solved else None,
                        "new_exact_match": result.best["exact_match"],
                        "old_exact_match": evaluate(result.model, held_out(old_config))["exact_match"],
                    })
                    print(json.dumps(runs[-1]), flush=True)
    return {"machine": {"platform": platform.platform(), "processor": platform.processor(),
                        "python": platform.python_version(), "numpy": np.__version__},
            "quick": args.quick, "learning_rates": rates, "runs": runs,
            "forward_backward_seconds": backward_times(3 if args.quick else 30)}


def figure(results: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    pairs = sorted({r["pair"] for r in results["runs"]})
    methods = list(dict.fromkeys(r["method"] for r in results["runs"]))
    fig, axes = plt.subplots(2, len(pairs), figsize=(5 * len(pairs), 6), squeeze=False)
    for column, pair in enumerate(pairs):
        for row, (key, label) in enumerate((("steps", "steps to solve (x: unsolved)"),
                                            ("old_exact_match", "old task exact match after"))):
            ax = axes[row, column]
            for i, method in enumerate(methods):
                for r in (r for r in results["runs"] if r["pair"] == pair and r["method"] == method):
                    value = r[key]
                    ax.plot(i, value if value is not None else 0, "o" if value is not None else "x",
                            color=f"C{i}")
            ax.set_xticks(range(len(methods)), methods, rotation=30, ha="right")
            ax.set_ylabel(label)
            ax.set_title(pair.replace(":", " -> "))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)


def main(argv=None) -> None:
    args = parse_args(argv)
    results = experiment(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    figure(results, args.figure)
    print(f"wrote {args.out} and {args.figure}")


if __name__ == "__main__":
    main()
