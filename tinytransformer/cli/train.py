"""``tinytransformer train``: its options (one per config field), the configs they make, the run."""

from __future__ import annotations

import sys
import time
from dataclasses import fields
from pathlib import Path

from ..checkpoint import BEST, LAST, CheckpointError, is_pretrained_folder
from ..finetune import FREEZE_PARTS
from ..nn.transformer import PRESETS, TransformerConfig
from ..rundir import HISTORY_FILE, RunDirError, read_run_config
from ..tasks import TASKS
from ..text_task import FINETUNE_LR, TEXT_DEFAULTS, TextTask, text_train_config
from ..train import check_resume, checkpoint_model_kind, default_model_config, init_model_config, train
from ..train_config import (LORA_ALPHA, LORA_TARGETS, MODEL_DEFAULTS, MODEL_KINDS, OPTIMIZERS, TEXT_TASK,
                            TOKENIZERS, TrainConfig)
from .common import PROG, UsageError, os_error
from .runs import write_plots

# (flag, config, field, type, help); defaults come from the dataclasses, so --help shows them
TRAIN_OPTIONS = [
    ("--task", "train", "task", str, f"toy task ({', '.join(sorted(TASKS))}) or {TEXT_TASK} "
     f"(language modelling on a text; its own recipe, the 'with --task text' defaults)"),
    ("--text", "train", "text", str, "--task text: a UTF-8 file, its last 10%% the validation split; "
     "None: Python's help topics (pydoc_data.topics)"),
    ("--tokenizer", "train", "tokenizer", str, f"--task text from scratch: {', '.join(TOKENIZERS)} "
     f"(char: the whole text's characters; bpe: trained on the training split)"),
    ("--vocab-size", "train", "vocab_size", int, "--tokenizer bpe: tokens to learn (>= 256)"),
    ("--block-size", "train", "block_size", int, "--task text: tokens per training window"),
    ("--minutes", "train", "minutes", float, "a wall-clock budget over all sessions of the run; "
     "it stops at whichever of --steps and --minutes comes first (the lr schedule counts steps)"),
    ("--n-symbols", "train", "n_symbols", int, "number of distinct symbols"),
    ("--min-len", "train", "min_len", int, "shortest source sequence"),
    ("--max-len", "train", "max_len", int, "longest source sequence"),
    ("--model", "train", "model", str, f"model kind: {', '.join(MODEL_KINDS)}"),
    ("--d-model", "model", "d_model", int, "model width"),
    ("--n-heads", "model", "n_heads", int, "attention heads"),
    ("--d-ff", "model", "d_ff", int, "feed-forward hidden width"),
    ("--n-encoder-layers", "model", "n_encoder_layers", int, "encoder layers"),
    ("--n-decoder-layers", "model", "n_decoder_layers", int,
     "decoder layers; a decoder-only model's blocks"),
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
    ("--lr", "train", "lr", float, f"peak learning rate (fine-tuning a text model, --task text "
     f"--init-from: {FINETUNE_LR['full']:g}, with --lora-rank {FINETUNE_LR['lora']:g})"),
    ("--schedule", "train", "schedule", str, "cosine, inverse_sqrt or constant"),
    ("--warmup", "train", "warmup", int, "linear warmup steps"),
    ("--decay-steps", "train", "decay_steps", int, "cosine: the step at which lr reaches --min-lr "
     "(--task text: --steps)"),
    ("--min-lr", "train", "min_lr", float, "cosine: the learning rate after --decay-steps "
     "(--task text: a tenth of --lr)"),
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


def _default(config: str, name: str) -> str:
    """The default an option's help states: its config field's, a model kind's own where
    that kind's runs set the field (``MODEL_DEFAULTS``), and the text task's (``TEXT_DEFAULTS``)."""
    cls = TrainConfig if config == "train" else TransformerConfig
    default = next(f.default for f in fields(cls) if f.name == name)
    text = f"default: {default}"
    if config == "model":
        text += "".join(f"; with --model {kind}: {own[name]}"
                        for kind, own in MODEL_DEFAULTS.items() if name in own)
    if TEXT_DEFAULTS[config].get(name, default) != default:
        text += f"; with --task text: {TEXT_DEFAULTS[config][name]}"
    elif config == "model" and name == "max_len":
        text += "; with --task text: --block-size"
    return text


def add_train(sub) -> None:
    p = sub.add_parser("train", help="train a model on a toy task or a text",
                       description="Train a model on a toy task until it solves it (held-out exact "
                                   "match >= --target overall and >= --target-worst at every length). "
                                   "With no options: the reference run (reverse, 10 symbols, lengths "
                                   "1..16, d_model 64, 4 heads, d_ff 256, 2+2 layers) with the recipe "
                                   "that solved it on every seed measured: batch 64, Adam, lr warmed up "
                                   "to 2e-3 over 100 steps then cosine down to 1e-4 at step 800, "
                                   "clipping at 1.0, label smoothing 0.1. On the same NumPy/BLAS build "
                                   "a seed gives the same run bit for bit; another build takes another, "
                                   "equally good path (docs/reference-runs.md: the range over seeds). "
                                   "--task text trains a character-level GPT on a text (Python's help "
                                   "topics unless --text FILE), judged by validation bits per "
                                   "character, with the defaults marked 'with --task text'; "
                                   "--init-from also takes a Hugging Face folder (GPT-2, LLaMA) "
                                   "to fine-tune on a text.")
    for flag, config, name, kind, text in TRAIN_OPTIONS:
        p.add_argument(flag, type=kind, dest=f"{config}.{name}", metavar=name.upper(),
                       help=f"{text} ({_default(config, name)})")
    p.add_argument("--betas", type=float, nargs=2, dest="train.betas", metavar=("BETA1", "BETA2"),
                   help="Adam betas (default: 0.9 0.98; with --task text: 0.9 0.99)")
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
                        "weights), or, with --task text, a text run or a Hugging Face folder (its "
                        "tokenizer too); the task and the recipe come from these options")
    p.add_argument("--lora-rank", type=int, dest="train.lora_rank", metavar="R",
                   help="with --init-from: train LoRA adapters of rank R on the Linears --lora-targets "
                        "names, everything else frozen; checkpoints hold the adapters only")
    p.add_argument("--lora-targets", nargs="+", dest="train.lora_targets", metavar="NAME",
                   help=f"with --lora-rank: the attribute names of the Linears that get adapters "
                        f"(default: {' '.join(LORA_TARGETS)}: every projection of every attention "
                        f"and feed-forward; the LoRA paper's were w_q w_v)")
    p.add_argument("--lora-alpha", type=float, dest="train.lora_alpha", metavar="ALPHA",
                   help=f"with --lora-rank: the adapters are scaled by ALPHA / R; ALPHA fixed, so a "
                        f"larger R adds directions, not step size (default: {LORA_ALPHA:g})")
    p.add_argument("--freeze", action="append", choices=FREEZE_PARTS, dest="train.freeze",
                   help="with --init-from: keep this part's trained weights (repeatable)")
    p.add_argument("--out", type=Path, help="run directory (default: runs/<task>-seed<seed>-<time>)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last checkpoint")
    p.set_defaults(run=cmd_train)


def _overrides(args, config: str) -> dict:
    prefix = f"{config}."
    return {k[len(prefix):]: v for k, v in vars(args).items() if k.startswith(prefix) and v is not None}


def train_configs(args) -> tuple[TrainConfig, TransformerConfig, Path]:
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
    text = train_over.get("task") == TEXT_TASK
    if "init_from" in train_over:
        init_from = train_over["init_from"] = str(train_over["init_from"].resolve())
        if model_over:
            raise UsageError(f"train --init-from: the model is the trained run's, its options "
                             f"cannot change it; drop {', '.join(sorted(model_over))}")
        if text and {"tokenizer", "vocab_size"} & set(train_over):
            raise UsageError("train --init-from: the model's own tokenizer is used; drop --tokenizer "
                             "and --vocab-size")
        if not text and is_pretrained_folder(init_from):
            raise UsageError(f"train --init-from {init_from}: a Hugging Face folder is fine-tuned on "
                             f"a text: add --task text (and --text FILE)")
        if not text:
            train_over.setdefault("model", checkpoint_model_kind(init_from))
    if text:
        config = text_train_config(**train_over)
        task = TextTask(config)
        model_config = task.fit_model_config(None if config.init_from is not None
                                             else task.default_model_config(**model_over))
    else:
        config = TrainConfig(**train_over)
        model_config = (init_model_config(config) if config.init_from is not None
                        else default_model_config(config, **model_over))
    out = args.out
    if out is None:
        kind = "-lm" if config.model == "decoder-only" and not text else ""
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
        config, model_config, out = train_configs(args)
    except (ValueError, TypeError, RunDirError, FileNotFoundError, CheckpointError) as err:
        raise UsageError(f"train: {err}") from None
    try:
        result = train(config, model_config, out_dir=out, resume=args.resume)
    except FloatingPointError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 1
    except (CheckpointError, RunDirError) as err:     # a damaged last.npz, a locked or bad --out
        raise UsageError(f"train: {err}") from None
    except OSError as err:                            # a checkpoint write failed: disk full, ...
        print(f"{PROG}: error: train: {os_error(err)}; the files already in {out} are intact",
              file=sys.stderr)
        return 1
    if result.stopped == "interrupted":
        return 130
    best = result.best
    if best is None:
        print("No evaluation was run; nothing to report.")
    elif config.task == TEXT_TASK:
        spent = (f"{config.minutes:g} minutes" if result.stopped == "minutes"
                 else f"the budget of {config.steps} steps")
        print(f"Validation {best['bpc']:.4f} bits per character at step {best['step']} (the best "
              f"evaluation); stopped after {spent}: {result.steps} steps, "
              f"{result.seconds:.0f} s.")
    else:
        rule = f"exact match >= {config.target:g} overall and >= {config.target_worst:g} at every length"
        within = f"{config.minutes:g} minutes" if result.stopped == "minutes" else f"{config.steps} steps"
        verdict = f"solved ({rule})" if result.stopped == "target" else f"not solved ({rule}) within {within}"
        print(f"Held-out exact match {best['exact_match']:.4f} (worst length {best['worst_length']}: "
              f"{best['worst']:.3f}; token accuracy {best['token_accuracy']:.4f}) on {config.eval_size} "
              f"{config.task} sequences of lengths {config.min_len}..{config.max_len}, at step "
              f"{best['step']}: {verdict}; {result.steps} steps, {result.seconds:.0f} s.")
    print(f"Checkpoints: {out / BEST} (best evaluation), {out / LAST} (for --resume)")
    print(f"History:     {out / HISTORY_FILE}")
    if best is not None:
        line, saved = write_plots(out)
        print(f"Plots of the best model on {line}:")
        for path in saved:
            print(f"             {path}")
        example = '"some text"' if config.task == TEXT_TASK else '"3 1 4 1 5"'
        print(f"Plot another example: {PROG} plot {out} --example {example}")
        if config.task == TEXT_TASK:
            print(f"Generate:             {PROG} generate {out} \"a prompt\" --max-new-tokens 200")
    return 0
