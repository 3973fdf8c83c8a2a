"""The reference text run: a character model of Python's help topics, NumPy beside its PyTorch peer.

    python benchmarks/text_reference.py                          # seeds 0 1 2, both sides, 10 minutes
    python benchmarks/text_reference.py --seeds 0 --no-torch --steps 600 --set lr=2e-3 \\
        --out /tmp/trial.json                                    # a short trial of another recipe
    python benchmarks/text_reference.py --table                  # the table again from the JSON
    python benchmarks/text_reference.py --table --merge a.json b.json   # one result of two runs
                                                                 # (NumPy and PyTorch measured apart)

Each run trains the decoder-only model of ``model_config`` on random windows of the default
corpus's training split with the recipe of ``RECIPE``, one visible step at a time (the five
lines of ``step``), and scores the whole validation split in bits per character
(``tinytransformer.text.bits_per_char``) every ``eval_every`` steps. It stops after ``steps``
steps (the length of the cosine schedule) or when its training time reaches ``--budget``
seconds, whichever comes first. Steps to the target (the first evaluation at or below
``TARGET`` bits per character) do not depend on the machine's load; seconds do, so every run
records the load average beside them (re-run on an idle machine to refresh them).

The PyTorch peer (``benchmarks/torch_text_peer.py``: eager, ``scaled_dot_product_attention``,
fused AdamW) starts from the NumPy model's initial weights, takes the same batches (one
generator draws the windows for both) and the same schedule and clipping, and is scored by
the same ``bits_per_char`` (its logits handed over as NumPy arrays). Float32 rounding differs
between the two, so their trajectories part after a few dozen steps: compare the sides over
seeds, not one seed.

Both sides get ``--threads`` threads (default 2), NumPy imported first: PyTorch through
``torch.set_num_threads``, NumPy as its model holds them (this model's step splits its batch
over both: ``tinytransformer/nn/batch_split.py``). Seconds are training time; the evaluations'
time is counted apart.
Results: ``benchmarks/results/textref.json`` and ``textref.md`` (the table and samples that
``docs/text.md`` includes).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT), str(HERE)]          # the package of this checkout, and the peer

from tinytransformer import (AdamW, CharTokenizer, CrossEntropyLoss, DecoderOnlyTransformer,  # noqa: E402
                             TransformerConfig, clip_grad_norm, generate, save_checkpoint)
from tinytransformer.optim import cosine  # noqa: E402
from tinytransformer.text import TextData, bits_per_char, default_corpus, random_windows  # noqa: E402
from tinytransformer.text_task import TEXT_DEFAULTS  # noqa: E402
from tinytransformer.threads import threads  # noqa: E402
from machine import commit, cpu_name, stated  # noqa: E402

TARGET = 1.75                    # validation bits per character
RECIPE = dict(n_layers=4, d_model=128, n_heads=4, d_ff=512, activation="gelu_tanh", block_size=128,
              batch_size=32, lr=3e-3, min_lr=3e-4, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.1, warmup=100,
              clip=1.0, steps=1500, eval_every=250)
SAMPLE_PROMPTS = ("The ", "def ", "    if ")
SAMPLE_TOKENS = 120
SAMPLE_TEMPERATURE = 0.8


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--budget", type=float, default=600.0, help="training seconds per run")
    parser.add_argument("--steps", type=int, default=None,
                        help="the schedule's length (default: the recipe's)")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="change one number of the recipe, e.g. lr=2e-3 (repeatable)")
    parser.add_argument("--no-torch", action="store_true", help="NumPy only")
    parser.add_argument("--no-numpy", action="store_true", help="PyTorch only")
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON path (default: benchmarks/results/textref.json)")
    parser.add_argument("--save-model", type=Path, default=None, metavar="PATH",
                        help="save the NumPy model of the first seed there (a checkpoint, .npz), with its "
                             "tokenizer's characters")
    parser.add_argument("--table", action="store_true",
                        help="run nothing: write the Markdown again from the JSON")
    parser.add_argument("--merge", type=Path, nargs="+", default=None, metavar="JSON",
                        help="with --table: the results of separate runs (one side each, same recipe), "
                             "written together to --out")
    return parser.parse_args(argv)


def recipe_from(args: argparse.Namespace) -> dict:
    """RECIPE with the command line's changes; a name it does not have is an error."""
    recipe = dict(RECIPE)
    for item in args.set:
        name, _, value = item.partition("=")
        if name not in recipe or name == "betas":
            raise SystemExit(f"--set {item}: expected NAME=VALUE with NAME one of "
                             f"{', '.join(k for k in recipe if k != 'betas')}")
        recipe[name] = type(recipe[name])(float(value)) if isinstance(recipe[name], int) else float(value)
    if args.steps is not None:
        recipe["steps"] = args.steps
    return recipe


def model_config(vocab_size: int, recipe: dict) -> TransformerConfig:
    """The reference text model: ``tinytransformer train --task text``'s (``TEXT_DEFAULTS``: pre-LN,
    learned positions; no special ids, as a character model of a text has no padding, no start
    and no end token) with the recipe's sizes and activation."""
    return TransformerConfig(**{**TEXT_DEFAULTS["model"], "vocab_size": vocab_size, "d_model": recipe["d_model"],
                                "n_heads": recipe["n_heads"], "d_ff": recipe["d_ff"],
                                "activation": recipe["activation"], "n_decoder_layers": recipe["n_layers"],
                                "max_len": recipe["block_size"]})


def learning_rate(step: int, recipe: dict) -> float:
    """Linear warmup to lr, then half a cosine down to min_lr at the last step."""
    return cosine(step, recipe["lr"], recipe["steps"], recipe["warmup"], recipe["min_lr"])


class TorchScored:
    """The PyTorch model as ``bits_per_char`` calls a model: ``config``, train/eval, NumPy logits."""

    def __init__(self, model, config: TransformerConfig):
        self.model, self.config = model, config

    @property
    def training(self) -> bool:
        return self.model.training

    def train(self, mode: bool = True) -> None:
        self.model.train(mode)

    def eval(self) -> None:
        self.model.eval()

    def __call__(self, ids: np.ndarray) -> np.ndarray:
        import torch
        with torch.no_grad():
            return self.model(torch.from_numpy(ids)).numpy()


def numpy_side(model: DecoderOnlyTransformer, recipe: dict):
    """(step function, scored model) for the NumPy model: the five lines of a training step."""
    crit = CrossEntropyLoss()
    opt = AdamW(model, lr=recipe["lr"], betas=recipe["betas"], eps=recipe["eps"],
                weight_decay=recipe["weight_decay"])

    def step(inputs: np.ndarray, labels: np.ndarray, lr: float) -> float:
        model.zero_grad()
        logits = model(inputs)                                   # (B, T, V)
        loss = crit(logits, labels)
        model.backward(crit.backward())
        clip_grad_norm(model, recipe["clip"])
        opt.lr = lr
        opt.step()
        return float(loss)

    return step, model


def torch_side(np_model: DecoderOnlyTransformer, recipe: dict):
    """(step function, scored model) for the PyTorch peer, from the NumPy model's weights."""
    import torch
    import torch.nn.functional as F
    import torch_text_peer
    model = torch_text_peer.TorchDecoderOnly(np_model.config)
    torch_text_peer.load_numpy_weights(model, np_model)
    # fused: one kernel for every parameter's update, PyTorch's fastest AdamW on the CPU
    opt = torch.optim.AdamW(model.parameters(), lr=recipe["lr"], betas=recipe["betas"], eps=recipe["eps"],
                            weight_decay=recipe["weight_decay"], fused=True)

    def step(inputs: np.ndarray, labels: np.ndarray, lr: float) -> float:
        opt.zero_grad()
        logits = model(torch.from_numpy(inputs))
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), torch.from_numpy(labels).reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), recipe["clip"])
        for group in opt.param_groups:
            group["lr"] = lr
        opt.step()
        return loss.item()

    return step, TorchScored(model, np_model.config)


def run(side: str, seed: int, data: TextData, recipe: dict, budget: float) -> tuple[dict, object]:
    """One seed on one side: (the evaluations, the step and seconds at the target, the end;
    the trained model)."""
    model_rng, data_rng = np.random.default_rng([seed, 0]), np.random.default_rng([seed, 1])
    np_model = DecoderOnlyTransformer(model_config(data.tokenizer.vocab_size, recipe), rng=model_rng)
    step_fn, scored = (numpy_side if side == "NumPy" else torch_side)(np_model, recipe)
    losses, evals = [], []
    train_seconds = eval_seconds = 0.0
    load_start = os.getloadavg()[0]
    step = 0
    while step < recipe["steps"] and train_seconds < budget:
        inputs, labels = random_windows(data.train_ids, recipe["batch_size"], recipe["block_size"], data_rng)
        start = time.perf_counter()
        step += 1
        losses.append(step_fn(inputs, labels, learning_rate(step, recipe)))
        train_seconds += time.perf_counter() - start
        if step % recipe["eval_every"] == 0 or step == recipe["steps"] or train_seconds >= budget:
            start = time.perf_counter()
            bpc = bits_per_char(scored, data.tokenizer, data.val_text)
            eval_seconds += time.perf_counter() - start
            evals.append({"step": step, "bpc": bpc, "train_seconds": train_seconds,
                          "train_loss": float(np.mean(losses[-recipe["eval_every"]:]))})
            print(f"  {side} seed {seed} step {step}: {bpc:.4f} bpc, {train_seconds:.0f} s, "
                  f"load {os.getloadavg()[0]:.1f}", file=sys.stderr, flush=True)
    reached = next((e for e in evals if e["bpc"] <= TARGET), None)
    result = {"seed": seed, "steps": step, "train_seconds": train_seconds, "eval_seconds": eval_seconds,
              "ms_per_step": 1000.0 * train_seconds / step, "final_bpc": evals[-1]["bpc"],
              "target_step": reached["step"] if reached else None,
              "target_seconds": reached["train_seconds"] if reached else None,
              "load_start": load_start, "load_end": os.getloadavg()[0], "evals": evals,
              "first_losses": losses[:5]}
    if side == "NumPy":
        result["samples"] = samples(np_model, data.tokenizer, seed)
    return result, scored


def samples(model: DecoderOnlyTransformer, tokenizer, seed: int) -> dict[str, str]:
    """Each prompt continued by SAMPLE_TOKENS characters (fewer if the context is shorter) at
    SAMPLE_TEMPERATURE."""
    rng = np.random.default_rng([seed, 2])
    out = {}
    for prompt in SAMPLE_PROMPTS:
        ids = np.array([tokenizer.encode(prompt)])
        n = min(SAMPLE_TOKENS, model.config.max_len + 1 - ids.shape[1])
        new = generate(model, ids, n, temperature=SAMPLE_TEMPERATURE, rng=rng)
        out[prompt] = prompt + tokenizer.decode(new[0].tolist())
    return out


def save_model(path: Path, model: DecoderOnlyTransformer, tokenizer: CharTokenizer, result: dict,
               recipe: dict) -> None:
    """A checkpoint of ``model`` whose ``extra`` holds what a reader of it needs: the tokenizer's
    characters (``CharTokenizer(extra["characters"])``), the corpus, the recipe and the score."""
    extra = {"characters": "".join(tokenizer.characters),
             "corpus": f"pydoc_data.topics of Python {platform.python_version()}",
             "recipe": {k: list(v) if isinstance(v, tuple) else v for k, v in recipe.items()},
             "seed": result["seed"], "val_bpc": result["final_bpc"]}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(path, model, step=result["steps"], task="text", extra=extra)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)", file=sys.stderr)


def summary(runs: list[dict]) -> dict:
    reached = [r for r in runs if r["target_step"] is not None]
    return {"runs": len(runs), "reached": len(reached),
            "target_steps": [r["target_step"] for r in runs],
            "target_seconds": [r["target_seconds"] for r in runs],
            "final_bpc": [r["final_bpc"] for r in runs], "steps": [r["steps"] for r in runs],
            "ms_per_step_median": float(np.median([r["ms_per_step"] for r in runs])),
            "load": [r["load_start"] for r in runs]}


def markdown(results: dict) -> str:
    recipe = results["recipe"]
    fmt = lambda values, spec: " / ".join("-" if v is None else format(v, spec) for v in values)  # noqa: E731
    lines = [stated(results["machine"], results.get("commit")), "",
             f"Each cell gives one value per seed, in the order of the seeds column. Recipe: "
             f"{recipe['n_layers']} layers, d_model {recipe['d_model']}, {recipe['n_heads']} heads, "
             f"d_ff {recipe['d_ff']}, block {recipe['block_size']}, batch {recipe['batch_size']}; AdamW lr "
             f"{recipe['lr']:g} betas {tuple(recipe['betas'])} weight decay {recipe['weight_decay']:g}, "
             f"warmup {recipe['warmup']}, cosine to {recipe['min_lr']:g} at step {recipe['steps']}, "
             f"clip {recipe['clip']:g}; validation scored every {recipe['eval_every']} steps; "
             f"at most {results['budget']:.0f} s of training. Seconds are training time (evaluation "
             f"apart); load is the 1-minute load average when the run started.", "",
             f"| | seeds | reached {TARGET} bpc | step at {TARGET} | seconds at {TARGET} | steps run "
             f"| final bpc | ms / step (median) | load |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for side, s in results["summary"].items():
        seeds = " / ".join(str(r["seed"]) for r in results["runs"][side])
        lines.append(f"| {side} | {seeds} | {s['reached']}/{s['runs']} | {fmt(s['target_steps'], 'd')} "
                     f"| {fmt(s['target_seconds'], '.0f')} | {fmt(s['steps'], 'd')} "
                     f"| {fmt(s['final_bpc'], '.3f')} | {s['ms_per_step_median']:.0f} "
                     f"| {fmt(s['load'], '.1f')} |")
    first = results["runs"].get("NumPy", [{}])[0]
    if "samples" in first:
        lines += ["", f"Samples of the NumPy model of seed {first['seed']} after its run, temperature "
                  f"{SAMPLE_TEMPERATURE}, {SAMPLE_TOKENS} characters after each prompt:", ""]
        for text in first["samples"].values():
            lines += ["```", text, "```", ""]
    return "\n".join(lines).rstrip("\n") + "\n"


def merged(parts: list[dict]) -> dict:
    """One result holding the runs of several: the sides measured in separate processes."""
    recipes = {json.dumps(part["recipe"], sort_keys=True) for part in parts}
    if len(recipes) != 1:
        raise SystemExit(f"--merge: the results were measured with different recipes: {sorted(recipes)}")
    results = {**parts[0], "runs": {}}
    # a NumPy-only run's machine line is the PyTorch run's without ", PyTorch <version>": keep the longer
    machines = {re.sub(r", PyTorch [^,]+", "", part["machine"]) for part in parts}
    results["machine"] = max((part["machine"] for part in parts), key=len) if len(machines) == 1 \
        else " / ".join(sorted(machines))
    results["commit"] = " / ".join(dict.fromkeys(str(part["commit"]) for part in parts))
    for part in parts:
        for side, runs in part["runs"].items():
            results["runs"].setdefault(side, []).extend(runs)
    results["seeds"] = sorted({r["seed"] for runs in results["runs"].values() for r in runs})
    return results


def write(results: dict, out: Path) -> None:
    """The results JSON and its Markdown beside it, the summary computed from the runs so far."""
    results["summary"] = {side: summary(runs) for side, runs in results["runs"].items() if runs}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n")
    out.with_suffix(".md").write_text(markdown(results))


def main(args: argparse.Namespace) -> dict:
    out = args.out or HERE / "results" / "textref.json"
    if args.table:
        results = merged([json.loads(p.read_text()) for p in args.merge]) if args.merge \
            else json.loads(out.read_text())
        write(results, out)
        return results
    from threadpoolctl import threadpool_info
    recipe = recipe_from(args)
    sides = [s for s, skip in (("NumPy", args.no_numpy), ("PyTorch", args.no_torch)) if not skip]
    versions = ""
    if "PyTorch" in sides:
        import torch
        torch.set_num_threads(args.threads)
        versions = f", PyTorch {torch.__version__}"
    text = default_corpus()
    data = TextData.from_text(text, CharTokenizer.from_text(text), recipe["block_size"])
    blas = sorted({f"{i['internal_api']} {i['version']}" for i in threadpool_info() if i["user_api"] == "blas"})
    machine = (f"{cpu_name()}, {len(os.sched_getaffinity(0))} cores, Python {platform.python_version()}, "
               f"NumPy {np.__version__} ({', '.join(blas)}){versions}, {args.threads} threads each")
    results = {"seeds": args.seeds, "machine": machine, "commit": commit(), "recipe": recipe,
               "budget": args.budget, "target": TARGET, "runs": {side: [] for side in sides}}
    for seed in args.seeds:
        for side in sides:
            # NumPy's model holds its own threads; PyTorch's were set above
            with threads(args.threads) if side == "NumPy" else contextlib.nullcontext():
                r, model = run(side, seed, data, recipe, args.budget)
            if args.save_model and side == "NumPy" and seed == args.seeds[0]:
                save_model(args.save_model, model, data.tokenizer, r, recipe)
            results["runs"][side].append(r)
            print(f"{side} seed {seed}: {TARGET} bpc at step {r['target_step']}, final {r['final_bpc']:.4f} "
                  f"after {r['steps']} steps, {r['train_seconds']:.0f} s", file=sys.stderr, flush=True)
            write(results, out)                     # after every run: a stopped benchmark keeps what ran
    print(markdown(results))
    return results


if __name__ == "__main__":
    main(parse_args())
