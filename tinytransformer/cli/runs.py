"""The commands that read a trained run: eval, generate, plot, merge."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from ..checkpoint import CheckpointError, save_checkpoint
from ..nn.lora import lora_settings, merge_lora
from ..rundir import RunDirError, read_history
from ..tasks import get_task, lm_prompt
from ..train import evaluate, held_out, longest_input, task_vocab
from .common import PROG, UsageError, load_run, model_output


def cmd_eval(args) -> int:
    model, info, config = load_run(args.run_dir, args.which)
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


def cmd_generate(args) -> int:
    model, info, config = load_run(args.run_dir, args.which)
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
    ended = model.config.eos_id in out
    verdict = "correct" if text == expected and ended else f"expected {expected}"
    if not ended:
        verdict += "; the model did not end its output with <eos>"
    if not (config.min_len <= len(src) <= config.max_len):
        verdict += f"; trained on lengths {config.min_len}..{config.max_len}"
    print(f"({config.task}: {verdict})", file=sys.stderr)
    return 0


DEFAULT_EXAMPLE = [3, 1, 4, 1, 5, 9, 2, 6]        # digits of pi, cut to the run's symbols and lengths


def write_plots(run_dir, example: str | None = None, out_dir=None, which=None) -> tuple[str, list[Path]]:
    """Attention grids of every layer and head for one example, and the training curves.

    Returns the example's line ("3 1 4 -> 4 1 3") and the paths written.
    """
    from ..plot import plot_attention_grid, plot_training_curves     # matplotlib only when plotting
    model, info, config = load_run(run_dir, which)
    vocab = task_vocab(config)
    if example is None:
        example = " ".join(str(s % config.n_symbols) for s in DEFAULT_EXAMPLE[:config.max_len])
    try:
        src = vocab.encode(example)
    except ValueError as err:
        raise UsageError(f"plot: {err}") from None
    out_dir = Path(out_dir) if out_dir is not None else Path(info["path"]).parent / "figures"
    output = model_output(model, config, src)
    eos = model.config.eos_id
    n_out = int(np.argmax(output == eos)) if eos in output else len(output)
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
        tgt_in = np.concatenate([[model.config.bos_id], output[:n_out]])[None]   # (1, 1 + n_out)
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
    model, info, _ = load_run(args.run_dir, args.which)
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
