"""The commands on a language model (a text run or a Hugging Face folder): strings in and out.

    generate MODEL "prompt" --max-new-tokens 200 --temperature 0.8 --top-k 40 --top-p 0.95 --seed 0
    eval MODEL [--text FILE]           validation bits per character (a text run's own split)
    plot MODEL --example "..."         every head of every layer, one figure per layer
    export RUN --out DIR               a Hugging Face folder transformers loads

``MODEL`` is opened by ``open.open_model`` (``common.open_run``), as every command does.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from .. import decode
from ..nn.lora import lora_settings, merge_lora
from ..pretrained import save_pretrained
from ..text import bits_per_char, load_text
from ..text_task import validation_text
from .common import PROG, UsageError, open_run

PRETRAINED_EXAMPLE = "The quick brown fox jumps over the lazy dog."
EXAMPLE_CHARS = 48        # a text run's default example: the start of its validation split


def encode_prompt(tokenizer, text: str, what: str) -> list[int]:
    try:
        return tokenizer.encode(text)
    except ValueError as err:
        raise UsageError(f"{what}: {err}") from None


def generate_text(model, tokenizer, prompt: str, max_new_tokens: int, temperature: float,
                  top_k: int | None, top_p: float | None, seed: int) -> tuple[list[int], list[int]]:
    """(prompt ids, new ids): the prompt continued with the KV cache, up to ``max_new_tokens``,
    stopping at the model's eos (not included) where it has one.

    Past the model's context (``max_len``), the model reads the last ``max_len`` tokens: each
    further token is one run over that window (positions cannot shift inside a cache).
    """
    ids = encode_prompt(tokenizer, prompt, "generate")
    if not ids:
        if model.config.bos_id is None:
            raise UsageError("generate: the prompt is empty and the model has no bos token to start "
                             "from; give a prompt")
        ids = [model.config.bos_id]
    rng, eos, context = np.random.default_rng(seed), model.config.eos_id, model.config.max_len
    tokens, new = list(ids), []
    while len(new) < max_new_tokens:
        window = tokens[-context:]
        n = min(max_new_tokens - len(new), context + 1 - len(window))
        try:
            out = decode.generate(model, np.array([window]), n, temperature=temperature, top_k=top_k,
                                  top_p=top_p, rng=rng)[0].tolist()
        except (ValueError, TypeError) as err:
            raise UsageError(f"generate: {err}") from None
        if eos is not None and eos in out:
            new += out[:out.index(eos)]
            break
        tokens += out
        new += out
    return ids, new


def cmd_generate_text(args, model, tokenizer, info) -> int:
    max_new = 200 if args.max_new_tokens is None else args.max_new_tokens
    if max_new < 1:
        raise UsageError(f"generate: --max-new-tokens expected an integer >= 1, got {max_new}")
    temperature = 0.8 if args.temperature is None else args.temperature
    t0 = time.perf_counter()
    ids, new = generate_text(model, tokenizer, args.prompt, max_new, temperature, args.top_k,
                             args.top_p, args.seed)
    seconds = time.perf_counter() - t0
    print(tokenizer.decode(ids + new))
    ended = " (stopped at end-of-text)" if len(new) < max_new else ""
    print(f"{len(new)} tokens in {seconds:.2f} s, {len(new) / max(seconds, 1e-9):.1f} tokens/s{ended}",
          file=sys.stderr)
    return 0


def cmd_eval_text(args, model, tokenizer, info) -> int:
    task = info["task"]
    if args.text is not None:
        try:
            text = load_text(args.text)
        except (FileNotFoundError, ValueError) as err:
            raise UsageError(f"eval: {err}") from None
        what = f"{args.text} (the whole file)"
    elif info["kind"] == "pretrained":
        raise UsageError(f"eval: {info['path']} is a pre-trained model with no text of its own; give "
                         f"the text to score with --text FILE")
    else:
        try:
            text = validation_text(task)
        except (FileNotFoundError, ValueError) as err:
            raise UsageError(f"eval: {err}") from None
        what = f"the validation split (the last 10%) of {task['text']}"
    block = args.block_size or (task["block_size"] if task else model.config.max_len)
    try:
        bpc = bits_per_char(model, tokenizer, text, block)
    except ValueError as err:
        raise UsageError(f"eval: {err}") from None
    step = "" if info["step"] is None else f" (step {info['step']})"
    print(f"{info['path']}{step}: {bpc:.4f} bits per character on {what}, {len(text):,} characters, "
          f"windows of {block} tokens")
    return 0


def token_label(tokenizer, token_id: int) -> str:
    """A token as a plot label: its text, with a space shown as '␣' and a newline as '\\n'."""
    return tokenizer.decode([token_id]).replace(" ", "␣").replace("\n", "\\n").replace("\t", "\\t")


def text_plots(model, tokenizer, info, example: str | None, out_dir, layer: int | None
               ) -> tuple[str, list[Path]]:
    """One figure per layer (or only ``layer``), every head, labelled with the example's tokens."""
    from ..plot import plot_attention_layer                    # matplotlib only when plotting
    if example is None:      # the default, cut to the model's context
        example = (PRETRAINED_EXAMPLE if info["kind"] == "pretrained"
                   else validation_text(info["task"])[:EXAMPLE_CHARS])
        example = tokenizer.decode(encode_prompt(tokenizer, example, "plot")[:model.config.max_len])
    ids = encode_prompt(tokenizer, example, "plot")
    if not 1 <= len(ids) <= model.config.max_len:
        raise UsageError(f"plot: --example is {len(ids)} tokens; expected 1 to {model.config.max_len} "
                         f"(the model's context)")
    n_layers = model.config.n_decoder_layers
    if layer is not None and not 0 <= layer < n_layers:
        raise UsageError(f"plot: --layer expected 0 to {n_layers - 1} (the model has {n_layers} "
                         f"layers), got {layer}")
    with decode.inference(model):
        model(np.array([ids]))
    maps = model.attention_maps()
    labels = [token_label(tokenizer, i) for i in ids]
    saved = []
    for l in range(n_layers) if layer is None else [layer]:
        path = Path(out_dir) / f"attention_layer{l}.png"
        plot_attention_layer(maps, l, labels, title=f"Layer {l} of {n_layers}: self-attention of every "
                             f"head on {example[:40]!r}", save=path)
        saved.append(path)
    return f"{example!r}, {len(ids)} tokens", saved


def cmd_export(args) -> int:
    model, tokens, info = open_run(args.run_dir, args.which)
    if info["kind"] == "toy":
        raise UsageError(f"export: {info['path']} is a toy task's model, with no text tokenizer; "
                         f"export writes language models (text runs, fine-tuned ones)")
    if lora_settings(model) is not None:
        merge_lora(model)
    try:
        save_pretrained(model, args.out, tokenizer=tokens)
    except ValueError as err:
        raise UsageError(f"export: {err}") from None
    print(f"{args.out}: {info['path']} as a Hugging Face folder (config.json, model.safetensors and "
          f"the tokenizer's files{', adapters merged' if info['lora'] else ''}); "
          f"transformers' AutoModelForCausalLM.from_pretrained reads it, and so does {PROG} generate")
    return 0
