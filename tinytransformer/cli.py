"""The command line: ``tinytransformer <command>`` or ``python -m tinytransformer <command>``.

    train      train a model on a toy task (defaults: the contract's reference run)
    eval       exact match of a trained run on held-out sequences (longer ones if asked)
    generate   the model's output for a sequence you type
    plot       attention maps of every head for one example, and the training curves
    merge      fold a LoRA run's adapters into its weights: a plain checkpoint
    gradcheck  check every layer's backward against central differences
    bench      run benchmarks/run.py (the benchmark suite of the repository)

A mistake in the arguments (a damaged checkpoint, an unusable run directory
included) is reported as one line on stderr with exit code 2; a failure while
running (divergence, a disk that fills up) as one line with exit code 1.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from dataclasses import fields
from pathlib import Path

import numpy as np

from .checkpoint import BEST, LAST, CheckpointError, load_checkpoint, save_checkpoint
from . import decode
from .nn.transformer import PRESETS, TransformerConfig
from .tasks import BOS, EOS, TASKS, get_task, lm_prompt
from .rundir import HISTORY_FILE, RunDirError, read_history, read_run_config
from .finetune import FREEZE_PARTS
from .nn.lora import lora_settings, merge_lora
from .train import (check_resume, checkpoint_model_kind, default_model_config, evaluate, held_out,
                    init_model_config, longest_input, task_vocab, train)
from .train_config import MODEL_KINDS, OPTIMIZERS, TrainConfig

PROG = "tinytransformer"


class UsageError(Exception):
    """A mistake in what the user asked for: reported as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        command = self.prog[len(PROG):].strip()
        raise UsageError(f"{command + ': ' if command else ''}{message} (see {self.prog} --help)")


# ---- train --------------------------------------------------------------------------------

# (flag, config, field, type, help); defaults come from the dataclasses, so --help shows them
TRAIN_OPTIONS = [
    ("--task", "train", "task", str, f"toy task: {', '.join(sorted(TASKS))}"),
    ("--n-symbols", "train", "n_symbols", int, "number of distinct symbols"),
    ("--min-len", "train", "min_len", int, "shortest source sequence"),
    ("--max-len", "train", "max_len", int, "longest source sequence"),
    ("--model", "train", "model", str, f"model kind: {', '.join(MODEL_KINDS)}"),
    ("--d-model", "model", "d_model", int, "model width"),
    ("--n-heads", "model", "n_heads", int, "attention heads"),
    ("--d-ff", "model", "d_ff", int, "feed-forward hidden width"),
    ("--n-encoder-layers", "model", "n_encoder_layers", int, "encoder layers"),
    ("--n-decoder-layers", "model", "n_decoder_layers", int,
     "decoder layers; the blocks of a decoder-only model (then 4 by default)"),
    ("--dropout", "model", "dropout", float, "dropout probability"),
    ("--model-max-len", "model", "max_len", int, "longest sequence the model accepts"),
    ("--activation", "model", "activation", str,
     "feed-forward: relu, gelu (exact), gelu_tanh, or swiglu (gated, a third projection)"),
    ("--positional", "model", "positional", str,
     "positions: sinusoidal or learned (added), rope or alibi (in self-attention), or none"),
    ("--norm", "model", "norm", str, "every norm of the model: layernorm or rmsnorm"),
    ("--rope-base", "model", "rope_base", float, "RoPE: the base of its wavelengths"),
    ("--batch-size", "train", "batch_size", int, "sequences per step"),
    ("--steps", "train", "steps", int, "step budget (the run stops earlier at the target)"),
    ("--optimizer", "train", "optimizer", str, f"optimizer: {', '.join(OPTIMIZERS)}"),
    ("--lr", "train", "lr", float, "peak learning rate"),
    ("--schedule", "train", "schedule", str, "cosine, inverse_sqrt or constant"),
    ("--warmup", "train", "warmup", int, "linear warmup steps"),
    ("--decay-steps", "train", "decay_steps", int, "cosine: the step at which lr reaches --min-lr"),
    ("--min-lr", "train", "min_lr", float, "cosine: the learning rate after --decay-steps"),
    ("--eps", "train", "eps", float, "Adam epsilon"),
    ("--weight-decay", "train", "weight_decay", float, "weight decay"),
    ("--momentum", "train", "momentum", float, "SGD momentum"),
    ("--clip", "train", "clip", float, "clip the global gradient norm to this (None: no clipping)"),
    ("--label-smoothing", "train", "label_smoothing", float, "label smoothing"),
    ("--eval-every", "train", "eval_every", int, "steps between evaluations"),
    ("--eval-size", "train", "eval_size", int, "held-out sequences, every length equally often"),
    ("--target", "train", "target", float, "solved: held-out exact match at least this overall..."),
    ("--target-worst", "train", "target_worst", float, "...and at least this at every length"),
    ("--seed", "train", "seed", int, "random seed (weights, dropout, batches)"),
    ("--log-every", "train", "log_every", int, "progress line period when not on a terminal"),
]


def _default(config: str, name: str):
    cls = TrainConfig if config == "train" else TransformerConfig
    return next(f.default for f in fields(cls) if f.name == name)


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train a model on a toy task",
                       description="Train a model on a toy task until it solves it (held-out exact "
                                   "match >= --target overall and >= --target-worst at every length). "
                                   "With no options: the reference run (reverse, 10 symbols, lengths "
                                   "1..16, d_model 64, 4 heads, d_ff 256, 2+2 layers) with the recipe "
                                   "that solved it on every seed measured: batch 64, Adam, lr warmed up "
                                   "to 2e-3 over 100 steps then cosine down to 1e-4 at step 800, "
                                   "clipping at 1.0, label smoothing 0.1. On the same NumPy/BLAS build "
                                   "a seed gives the same run bit for bit; another build takes another, "
                                   "equally good path (README: the measured range over seeds).")
    for flag, config, name, kind, text in TRAIN_OPTIONS:
        p.add_argument(flag, type=kind, dest=f"{config}.{name}", metavar=name.upper(),
                       help=f"{text} (default: {_default(config, name)})")
    p.add_argument("--betas", type=float, nargs=2, dest="train.betas", metavar=("BETA1", "BETA2"),
                   help="Adam betas (default: 0.9 0.98)")
    p.add_argument("--preset", choices=sorted(PRESETS),
                   help="a named set of model choices, which the options above override: modern = "
                        "--positional rope --norm rmsnorm --activation swiglu, pre-LN (the parts of "
                        "a LLaMA-style decoder); reference = the defaults (the paper's)")
    p.add_argument("--post-ln", action="store_const", const=False, dest="model.norm_first",
                   help="post-LN layers, as in the paper (default: pre-LN)")
    p.add_argument("--tie-embeddings", action="store_const", const=True, dest="model.tie_embeddings",
                   help="one matrix for source and target embeddings and the output projection")
    p.add_argument("--init-from", type=Path, dest="train.init_from", metavar="RUN_DIR",
                   help="fine-tune: start from this trained run's model (its config and best "
                        "weights); the task and the recipe come from these options")
    p.add_argument("--lora-rank", type=int, dest="train.lora_rank", metavar="R",
                   help="with --init-from: train LoRA adapters of rank R on every attention's w_q "
                        "and w_v, everything else frozen; checkpoints hold the adapters only")
    p.add_argument("--lora-alpha", type=float, dest="train.lora_alpha", metavar="ALPHA",
                   help="with --lora-rank: the adapters are scaled by ALPHA / R (default: ALPHA = R)")
    p.add_argument("--freeze", action="append", choices=FREEZE_PARTS, dest="train.freeze",
                   help="with --init-from: keep this part's trained weights (repeatable)")
    p.add_argument("--out", type=Path, help="run directory (default: runs/<task>-seed<seed>-<time>)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last checkpoint")
    p.set_defaults(run=cmd_train)


def _overrides(args, config: str) -> dict:
    prefix = f"{config}."
    return {k[len(prefix):]: v for k, v in vars(args).items() if k.startswith(prefix) and v is not None}


def _train_configs(args) -> tuple[TrainConfig, TransformerConfig, Path]:
    train_over = _overrides(args, "train")
    model_over = {**PRESETS.get(args.preset, {}), **_overrides(args, "model")}
    if args.resume:
        if args.out is None:
            raise UsageError("train --resume: give the run directory with --out DIR")
        saved = read_run_config(args.out)
        config = TrainConfig.from_dict({**saved["train"], **train_over})
        model_config = TransformerConfig.from_dict({**saved["model"], **model_over})
        check_resume(args.out, config, model_config)
        return config, model_config, args.out
    if "init_from" in train_over:
        init_from = train_over["init_from"] = str(train_over["init_from"].resolve())
        if model_over:
            raise UsageError(f"train --init-from: the model is the trained run's, its options "
                             f"cannot change it; drop {', '.join(sorted(model_over))}")
        train_over.setdefault("model", checkpoint_model_kind(init_from))
    config = TrainConfig(**train_over)
    model_config = (init_model_config(config) if config.init_from is not None
                    else default_model_config(config, **model_over))
    out = args.out
    if out is None:
        kind = "-lm" if config.model == "decoder-only" else ""
        tuned = ("" if config.init_from is None else f"-lora{config.lora_rank}" if config.lora_rank
                 else "-finetuned")
        out = Path("runs") / (f"{config.task}{kind}{tuned}-seed{config.seed}-"
                              f"{time.strftime('%Y%m%d-%H%M%S')}")
    if (out / LAST).exists():
        raise UsageError(f"{out} already holds a run: add --resume to continue it, or choose "
                         f"another --out")
    return config, model_config, out


def cmd_train(args) -> int:
    try:
        config, model_config, out = _train_configs(args)
    except (ValueError, TypeError, RunDirError, FileNotFoundError) as err:
        raise UsageError(f"train: {err}") from None
    try:
        result = train(config, model_config, out_dir=out, resume=args.resume)
    except FloatingPointError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 1
    except (CheckpointError, RunDirError) as err:     # a damaged last.npz, a locked or bad --out
        raise UsageError(f"train: {err}") from None
    except OSError as err:                            # a checkpoint write failed: disk full, ...
        print(f"{PROG}: error: train: {_os_error(err)}; the files already in {out} are intact",
              file=sys.stderr)
        return 1
    if result.stopped == "interrupted":
        return 130
    best = result.best
    if best is None:
        print("No evaluation was run; nothing to report.")
    else:
        rule = f"exact match >= {config.target:g} overall and >= {config.target_worst:g} at every length"
        how = {"target": f"solved ({rule})",
               "budget": f"not solved ({rule}) within {config.steps} steps"}
        print(f"Held-out exact match {best['exact_match']:.4f} (worst length {best['worst_length']}: "
              f"{best['worst']:.3f}; token accuracy {best['token_accuracy']:.4f}) on {config.eval_size} "
              f"{config.task} sequences of lengths {config.min_len}..{config.max_len}, at step "
              f"{best['step']}: {how[result.stopped]}; {result.steps} steps, {result.seconds:.0f} s.")
    print(f"Checkpoints: {out / BEST} (best evaluation), {out / LAST} (for --resume)")
    print(f"History:     {out / HISTORY_FILE}")
    if best is not None:
        line, saved = write_plots(out)
        print(f"Plots of the best model on {line}:")
        for path in saved:
            print(f"             {path}")
        print(f"Plot another example: {PROG} plot {out} --example \"3 1 4 1 5\"")
    return 0


def _os_error(err: OSError) -> str:
    """'<file>: <reason>', what a failed read or write means, without the errno number."""
    return f"{err.filename}: {err.strerror}" if err.filename and err.strerror else str(err)


# ---- eval, generate -----------------------------------------------------------------------


def _load_run(run_dir, which=None):
    """(model, info, TrainConfig of the task) of a run directory or checkpoint file."""
    try:
        model, info = load_checkpoint(run_dir, which=which)
    except (FileNotFoundError, CheckpointError) as err:
        raise UsageError(str(err)) from None
    task = info["task"] or {}
    try:
        config = TrainConfig(task=task["name"], n_symbols=task["n_symbols"], min_len=task["min_len"],
                             max_len=task["max_len"], model=task["model"])
    except (KeyError, TypeError, ValueError):
        raise UsageError(f"{info['path']}: the checkpoint does not say which task it was trained on "
                         f"(saved without task=); eval and generate need it") from None
    return model, info, config


def cmd_eval(args) -> int:
    model, info, config = _load_run(args.run_dir, args.which)
    min_len = args.min_len if args.min_len is not None else config.min_len
    max_len = args.max_len if args.max_len is not None else max(config.max_len, min_len)
    if longest_input(config, max_len) > model.config.max_len:
        raise UsageError(f"eval: sequences of {max_len} symbols are too long for this model "
                         f"(its max_len is {model.config.max_len})")
    try:
        data = held_out(config, min_len, max_len, args.n)
    except ValueError as err:
        raise UsageError(f"eval: {err}") from None
    scores = evaluate(model, data)
    print(f"{info['path']} (step {info['step']}), {config.task}, {config.model}:")
    print(f"exact match {scores['exact_match']:.4f} (worst length {scores['worst_length']}: "
          f"{scores['worst']:.3f}), token accuracy {scores['token_accuracy']:.4f} on "
          f"{scores['n']} held-out sequences of lengths {min_len}..{max_len}, every length equally "
          f"often (trained on {config.min_len}..{config.max_len})")
    if args.per_length:
        for length, exact in scores["by_length"].items():
            seen = "" if config.min_len <= length <= config.max_len else "  (longer than training)"
            print(f"  length {length:3d}: exact match {exact:.3f}{seen}")
    return 0


def model_output(model, config: TrainConfig, src: np.ndarray) -> np.ndarray:
    """Greedy output token ids for one source (1-D), ending at EOS if the model emits one."""
    vocab = task_vocab(config)
    if config.model == "decoder-only":
        prompt = lm_prompt(src, vocab)[None]                                  # (1, L + 1)
        return decode.generate(model, prompt, model.config.max_len - prompt.shape[1])[0]
    return decode.greedy_decode(model, src[None], min(model.config.max_len, 2 * len(src) + 2))[0]


def cmd_generate(args) -> int:
    model, info, config = _load_run(args.run_dir, args.which)
    vocab = task_vocab(config)
    try:
        src = vocab.encode(args.sequence)
    except ValueError as err:
        raise UsageError(f"generate: {err}") from None
    if longest_input(config, len(src)) > model.config.max_len:
        limit = max(L for L in range(model.config.max_len + 1)
                    if longest_input(config, L) <= model.config.max_len)
        raise UsageError(f"generate: {len(src)} symbols are too many for this model (at most {limit})")
    out = model_output(model, config, src)
    text = vocab.decode(out)
    expected = vocab.decode(get_task(config.task)(src))
    print(text)
    verdict = "correct" if text == expected and EOS in out else f"expected {expected}"
    if EOS not in out:
        verdict += "; the model did not end its output with <eos>"
    if not (config.min_len <= len(src) <= config.max_len):
        verdict += f"; trained on lengths {config.min_len}..{config.max_len}"
    print(f"({config.task}: {verdict})", file=sys.stderr)
    return 0


# ---- plot, gradcheck, bench ---------------------------------------------------------------

DEFAULT_EXAMPLE = [3, 1, 4, 1, 5, 9, 2, 6]        # digits of pi, cut to the run's symbols and lengths


def write_plots(run_dir, example: str | None = None, out_dir=None, which=None) -> tuple[str, list[Path]]:
    """Attention grids of every layer and head for one example, and the training curves.

    Returns the example's line ("3 1 4 -> 4 1 3") and the paths written.
    """
    from .plot import plot_attention_grid, plot_training_curves     # matplotlib only when plotting
    model, info, config = _load_run(run_dir, which)
    vocab = task_vocab(config)
    if example is None:
        example = " ".join(str(s % config.n_symbols) for s in DEFAULT_EXAMPLE[:config.max_len])
    try:
        src = vocab.encode(example)
    except ValueError as err:
        raise UsageError(f"plot: {err}") from None
    out_dir = Path(out_dir) if out_dir is not None else Path(info["path"]).parent / "figures"
    output = model_output(model, config, src)
    n_out = int(np.argmax(output == EOS)) if EOS in output else len(output)
    n_out = min(n_out, model.config.max_len - (len(src) + 1 if config.model == "decoder-only" else 1))
    # the decoder input that produced the output: BOS (or the prompt) then the output before EOS
    saved = []
    model.eval()
    if config.model == "decoder-only":
        ids = np.concatenate([lm_prompt(src, vocab), output[:n_out]])[None]      # (1, T)
        model(ids)
        tokens = [vocab.token_name(i) for i in ids[0]]
        path = out_dir / "attention_self.png"
        plot_attention_grid(model.attention_maps(), "self", tgt_tokens=tokens, save=path)
        saved.append(path)
    else:
        tgt_in = np.concatenate([[BOS], output[:n_out]])[None]                   # (1, 1 + n_out)
        model(src[None], tgt_in)
        src_tokens = [vocab.token_name(i) for i in src]
        tgt_tokens = [vocab.token_name(i) for i in tgt_in[0]]
        for kind in ("encoder", "decoder", "cross"):
            path = out_dir / f"attention_{kind}.png"
            plot_attention_grid(model.attention_maps(), kind, src_tokens=src_tokens,
                                tgt_tokens=tgt_tokens, save=path)
            saved.append(path)
    try:
        history = read_history(Path(info["path"]).parent)
    except (CheckpointError, RunDirError) as err:
        raise UsageError(f"plot: {err}") from None
    if history is not None:
        path = out_dir / "training_curves.png"
        plot_training_curves(history, save=path)
        saved.append(path)
    return f"{example} -> {vocab.decode(output)}", saved


def cmd_plot(args) -> int:
    line, saved = write_plots(args.run_dir, args.example, args.out, args.which)
    print(f"example: {line}")
    for path in saved:
        print(path)
    return 0


def cmd_merge(args) -> int:
    model, info, _ = _load_run(args.run_dir, args.which)
    if lora_settings(model) is None:
        raise UsageError(f"merge: {info['path']} holds no LoRA adapters; it is a plain checkpoint "
                         f"already")
    run = Path(args.run_dir)
    out = args.out if args.out is not None else (run if run.is_dir() else run.parent) / "merged.npz"
    if out.suffix != ".npz":
        raise UsageError(f"merge: --out expected a .npz file name, got {out}")
    path = save_checkpoint(out, merge_lora(model).requires_grad_(True), step=info["step"],
                           task=info["task"], extra={"merged_from": str(info["path"])})
    print(f"{path}: {info['path']} with its adapters merged into the weights "
          f"({model.num_parameters():,} parameters); use it like any checkpoint, e.g. "
          f"{PROG} eval {path}")
    return 0


def cmd_gradcheck(args) -> int:
    from .gradcheck import check_all, format_table
    results = check_all()
    print(format_table(results))
    return 0 if all(r.passed for r in results) else 1


def cmd_bench(args) -> int:
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "run.py"
    if not script.is_file():
        raise UsageError(f"bench: {script} not found; the benchmarks live in the repository, "
                         f"run from a source checkout")
    return subprocess.call([sys.executable, str(script), *args.bench_args])


# ---- the parser ---------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="A pure-NumPy Transformer with every backward pass "
                                            "written by hand: train it, evaluate it, look inside.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    _add_train(sub)

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
        print(f"{PROG}: error: {_os_error(err)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
