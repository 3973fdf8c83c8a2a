"""The commands that read a trained model: eval, generate, plot, merge (a toy run here; a
language model, a text run or a Hugging Face folder, in ``text.py``)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from ..checkpoint import CheckpointError, save_checkpoint
from ..nn.lora import lora_settings, merge_lora
from ..rundir import RunDirError, read_history
from ..tasks import get_task, lm_prompt
from ..text_task import TOKENIZER_DIR
from ..train import evaluate, held_out, longest_input, task_vocab
from .common import PROG, UsageError, model_output, open_run, toy_config
from .text import cmd_eval_text, cmd_generate_text, text_plots

TOY_OPTIONS = {"eval": ("min_len", "max_len", "n", "per_length"), "generate": (), "plot": ()}
TEXT_OPTIONS = {"eval": ("text", "block_size"), "plot": ("layer",),
                "generate": ("max_new_tokens", "temperature", "top_k", "top_p")}


def open_for(command: str, args):
    """(model, tokens, info) of ``args.run_dir``, refusing the options that belong to the other
    kind of model (a toy task's sequences or a language model's text)."""
    model, tokens, info = open_run(args.run_dir, args.which)
    other = TEXT_OPTIONS[command] if info["kind"] == "toy" else TOY_OPTIONS[command]
    given = [name for name in other if getattr(args, name) not in (None, False)]
    if given:
        flags = ", ".join("--" + name.replace("_", "-") for name in given)
        what = "a toy task's model" if info["kind"] == "toy" else "a language model"
        raise UsageError(f"{command}: {flags} {'does' if len(given) == 1 else 'do'} not apply to "
                         f"{info['path']}, {what}")
    return model, tokens, info


def cmd_eval(args) -> int:
    model, tokens, info = open_for("eval", args)
    if info["kind"] != "toy":
        return cmd_eval_text(args, model, tokens, info)
    config = toy_config(info)
    min_len = args.min_len if args.min_len is not None else config.min_len
    max_len = args.max_len if args.max_len is not None else max(config.max_len, min_len)
    if longest_input(config, max_len) > model.config.max_len:
        raise UsageError(f"eval: sequences of {max_len} symbols are too long for this model "
                         f"(its max_len is {model.config.max_len})")
    try:
        data = held_out(config, min_len, max_len, 1000 if args.n is None else args.n)
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
    model, tokens, info = open_for("generate", args)
    if info["kind"] != "toy":
        return cmd_generate_text(args, model, tokens, info)
    config = toy_config(info)
    vocab = task_vocab(config)
    try:
        src = vocab.encode(args.prompt)
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


def write_plots(run_dir, example: str | None = None, out_dir=None, which=None, layer=None,
                model_opened=None) -> tuple[str, list[Path]]:
    """Attention grids of every layer and head for one example, and the training curves of a run.

    A language model gets one figure per layer (or only ``layer``), its tokens as labels
    (``text.text_plots``). ``model_opened``: (model, tokens, info) already opened.
    Returns the example's line ("3 1 4 -> 4 1 3") and the paths written.
    """
    model, tokens, info = model_opened or open_run(run_dir, which)
    folder = Path(info["path"]) if info["kind"] == "pretrained" else Path(info["path"]).parent
    out_dir = Path(out_dir) if out_dir is not None else folder / "figures"
    if info["kind"] != "toy":
        line, saved = text_plots(model, tokens, info, example, out_dir, layer)
        if info["kind"] == "text":
            saved += _training_curves(folder, out_dir)
        return line, saved
    from ..plot import plot_attention_grid                 # matplotlib only when plotting
    config = toy_config(info)
    vocab = task_vocab(config)
    if example is None:
        example = " ".join(str(s % config.n_symbols) for s in DEFAULT_EXAMPLE[:config.max_len])
    try:
        src = vocab.encode(example)
    except ValueError as err:
        raise UsageError(f"plot: {err}") from None
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
    saved += _training_curves(folder, out_dir)
    return f"{example} -> {vocab.decode(output)}", saved


def _training_curves(run_dir: Path, out_dir: Path) -> list[Path]:
    """training_curves.png of the run's history, if it has one."""
    from ..plot import plot_training_curves                # matplotlib only when plotting
    try:
        history = read_history(run_dir)
    except (CheckpointError, RunDirError) as err:
        raise UsageError(f"plot: {err}") from None
    if history is None:
        return []
    path = out_dir / "training_curves.png"
    plot_training_curves(history, save=path)
    return [path]


def cmd_plot(args) -> int:
    line, saved = write_plots(args.run_dir, args.example, args.out, args.which, args.layer,
                              model_opened=open_for("plot", args))
    print(f"example: {line}")
    for path in saved:
        print(path)
    return 0


def cmd_merge(args) -> int:
    model, tokens, info = open_run(args.run_dir, args.which)
    if lora_settings(model) is None:
        raise UsageError(f"merge: {info['path']} holds no LoRA adapters; it is a plain checkpoint "
                         f"already")
    run = Path(args.run_dir)
    out = args.out if args.out is not None else (run if run.is_dir() else run.parent) / "merged.npz"
    if out.suffix != ".npz":
        raise UsageError(f"merge: --out expected a .npz file name, got {out}")
    path = save_checkpoint(out, merge_lora(model).requires_grad_(True), step=info["step"],
                           task=info["task"], extra={"merged_from": str(info["path"])})
    if info["kind"] == "text" and out.resolve().parent != Path(info["path"]).resolve().parent:
        tokens.save(out.parent / TOKENIZER_DIR)        # a text model's checkpoint reads it beside itself
    print(f"{path}: {info['path']} with its adapters merged into the weights "
          f"({model.num_parameters():,} parameters); use it like any checkpoint, e.g. "
          f"{PROG} eval {path}")
    return 0
