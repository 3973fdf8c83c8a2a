"""Language modelling on a text, as a task the training loop runs (``train --task text``).

Legend: B batch, T block size (tokens in a window), V vocabulary size.

``TextTask`` gives the loop what ``ToyTask`` gives it, for a text:

- batches: B random windows of T + 1 consecutive tokens of the training split (the first
  90% of the text), drawn from the data Generator; the labels are the inputs shifted by
  one, and the loss is plain cross-entropy over every label;
- judging: validation bits per character over the whole validation split (the last 10%,
  never trained on; ``text.bits_per_char``), lower is better; the progress line also shows
  a short continuation of a fixed prompt (the first characters of the validation split),
  sampled with a Generator of its own seed, so it never shifts the training stream;
- no "solved": the run ends when its budget is spent, ``steps`` or ``minutes``.

The tokenizer. ``char``: the distinct characters of the whole text, validation split
included: a character that appears only there would otherwise make the validation split
impossible to encode, and knowing that a character exists teaches nothing about which
one follows which (its embedding row is simply never trained). ``byte``: the 256 bytes of
UTF-8, nothing to learn. ``bpe``: byte-level BPE trained on the training split alone, so
its merges hold nothing of the validation text. A run fine-tuned from a trained model
(``init_from``: a text run or a Hugging Face folder) uses that model's own tokenizer.
The run directory keeps the tokenizer in ``tokenizer/``, and ``load_checkpoint`` gives it
back in ``info["tokenizer"]``.

The task recorded in every checkpoint names the text (its path, or "default corpus")
and its SHA-256, so ``eval`` scores the very validation split the run was judged on, and
refuses a file that has changed since.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import decode
from .finetune import check_trained_config
from .nn.module import Module
from .nn.transformer import TransformerConfig
from .text import TextData, bits_per_char, load_text, random_windows, split_text
from .open import open_config
from .tokenizers import BPETokenizer, ByteTokenizer, CharTokenizer
from .train_config import TEXT_TASK, TrainConfig

__all__ = ["TEXT_DEFAULTS", "FINETUNE_LR", "TextTask", "TextBatch", "text_train_config",
           "text_model_config", "build_tokenizer", "text_source", "validation_text", "TOKENIZER_DIR"]

TOKENIZER_DIR = "tokenizer"            # where a text run keeps its tokenizer, in its run directory
DEFAULT_CORPUS = "default corpus"      # what the task info says for Python's help topics

# The recipe of a text run from scratch, in one place: TrainConfig fields ("train") and model
# fields ("model") over their dataclass defaults; those of benchmarks/text_reference.py's
# reference run. A GPT-style decoder: learned positions, GPT-2's tanh GELU (the exact one's erf
# is a scalar loop in SciPy, a third of the step at these shapes), pre-LN; no special token
# ids (a character or a trained BPE has none). The cosine falls to a tenth of the peak (3e-4)
# at the step budget (text_train_config): 1,500 steps, where the 2,000-step run was at its best
# validation. The model keeps the sqrt(D) embedding scale and the
# output head's bias, which GPT-2 has not: such a run is not exported as a GPT-2 folder.
TEXT_DEFAULTS = {
    "train": {"model": "decoder-only", "batch_size": 32, "steps": 1500, "optimizer": "adamw",
              "lr": 3e-3, "betas": (0.9, 0.99), "eps": 1e-8, "weight_decay": 0.1, "schedule": "cosine",
              "warmup": 100, "clip": 1.0, "label_smoothing": 0.0,
              "eval_every": 250, "tokenizer": "char", "block_size": 128, "minutes": 10.0},
    "model": {"n_encoder_layers": 0, "n_decoder_layers": 4, "d_model": 128, "n_heads": 4,
              "d_ff": 512, "positional": "learned", "activation": "gelu_tanh",
              "pad_id": None, "bos_id": None, "eos_id": None},
}
# Fine-tuning a trained model (init_from): an order of magnitude or two below training from
# scratch, which would wash out what it learned; LoRA's fresh adapters take a larger one.
FINETUNE_LR = {"full": 1e-4, "lora": 1e-3}

SAMPLE_PROMPT_CHARS = 24       # the fixed prompt: the validation split's first characters
SAMPLE_CHARS = 60              # the continuation shown on the progress line, at most
SAMPLE_TEMPERATURE = 0.8
SAMPLE_SEED = 0


def text_train_config(**overrides) -> TrainConfig:
    """A TrainConfig of the text task: ``TEXT_DEFAULTS["train"]``, then ``overrides``.

    Unless given: ``decay_steps`` is the step budget, ``warmup`` at most a tenth of it,
    ``min_lr`` a tenth of the peak ``lr``, and fine-tuning (``init_from``) starts from
    ``FINETUNE_LR`` (LoRA's, or the full one).
    """
    fields = {**TEXT_DEFAULTS["train"], "task": TEXT_TASK, **overrides}
    if "warmup" not in overrides:
        fields["warmup"] = min(fields["warmup"], fields["steps"] // 10)
    if fields.get("init_from") is not None and "lr" not in overrides:
        fields["lr"] = FINETUNE_LR["lora" if fields.get("lora_rank") is not None else "full"]
    fields.setdefault("min_lr", float(f"{fields['lr'] / 10:.12g}"))    # 3e-4, not 0.00030000000000000003
    fields.setdefault("decay_steps", fields["steps"])
    return TrainConfig(**fields)


def text_model_config(tokenizer, block_size: int, **overrides) -> TransformerConfig:
    """The model of a text run from scratch: ``TEXT_DEFAULTS["model"]``, a vocabulary the
    tokenizer's size, a context of ``block_size`` and, where the tokenizer has an end of
    text (``eot_id``), that as eos; then ``overrides``."""
    fields = {**TEXT_DEFAULTS["model"], "vocab_size": tokenizer.vocab_size, "max_len": block_size,
              "eos_id": getattr(tokenizer, "eot_id", None)}
    return TransformerConfig(**{**fields, **overrides})


@functools.lru_cache(maxsize=2)
def _trained_bpe(train_text: str, vocab_size: int) -> BPETokenizer:
    # the CLI builds the model config before the run starts, and the run builds its task:
    # one text, one training of the merges
    return BPETokenizer.train(train_text, vocab_size)


def build_tokenizer(config: TrainConfig, text: str):
    """The tokenizer of a text run from scratch (the module docstring says which text each reads)."""
    if config.tokenizer == "char":
        return CharTokenizer.from_text(text)
    if config.tokenizer == "byte":
        return ByteTokenizer()
    return _trained_bpe(split_text(text)[0], config.vocab_size)


def text_source(text: str, path) -> dict:
    """What identifies a text: its path (or "default corpus"), SHA-256 and length in characters."""
    return {"text": DEFAULT_CORPUS if path is None else str(Path(path).resolve()),
            "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(), "characters": len(text)}


def check_same_text(saved: dict, text: str, path) -> None:
    """Refuse a text whose SHA-256 is not the one a run recorded (the file changed)."""
    now = text_source(text, path)
    if now["sha256"] != saved.get("sha256"):
        raise ValueError(f"text: {now['text']} has changed since the run read it (SHA-256 "
                         f"{now['sha256'][:12]}..., {now['characters']:,} characters; the run's was "
                         f"{str(saved.get('sha256'))[:12]}..., {saved.get('characters')} characters), "
                         f"so its validation split is another one")


def validation_text(task: dict) -> str:
    """The validation split of the text a run's recorded ``task`` names, checked unchanged."""
    path = None if task["text"] == DEFAULT_CORPUS else task["text"]
    text = load_text(path)
    check_same_text(task, text, path)
    return split_text(text)[1]


@dataclass
class TextBatch:
    """B windows of a text: ``ids`` (B, T) the input, ``labels`` (B, T) the next token of each."""
    ids: np.ndarray
    labels: np.ndarray

    @property
    def n_tokens(self) -> int:
        return self.labels.size


class TextTask:
    """What the training loop needs of a text (see the module docstring).

    With ``config.init_from`` (a text run or a Hugging Face folder), the tokenizer and the
    model config (``base_config``) are the trained model's; else the tokenizer is built from
    the config (``build_tokenizer``) and ``base_config`` is None.
    """

    def __init__(self, config: TrainConfig):
        self.config, self.base_config = config, None
        text = load_text(config.text)
        self.source = text_source(text, config.text)
        if config.init_from is None:
            self.tokenizer = build_tokenizer(config, text)
        else:
            self.base_config, self.tokenizer = self._trained_model(config.init_from)
        self.data = TextData.from_text(text, self.tokenizer, config.block_size)
        # the prompt: the validation split's first characters, at most half a window of tokens
        ids = self.tokenizer.encode(self.data.val_text[:SAMPLE_PROMPT_CHARS])[:max(1, config.block_size // 2)]
        self.prompt_ids = np.array([ids], dtype=np.int64)                                 # (1, P)
        self.prompt = self.tokenizer.decode(ids)

    @staticmethod
    def _trained_model(init_from) -> tuple[TransformerConfig, object]:
        model_class, config, tokenizer, source = open_config(init_from)
        if tokenizer is None:
            task = source["task"] or {}
            raise ValueError(f"init_from: {source['path']} holds a {model_class} trained on the toy "
                             f"task {task.get('name')!r}, which has no text tokenizer; a text run "
                             f"starts from a text run or a Hugging Face folder")
        return config, tokenizer

    def default_model_config(self, **overrides) -> TransformerConfig:
        return text_model_config(self.tokenizer, self.config.block_size, **overrides)

    def fit_model_config(self, model_config: TransformerConfig | None) -> TransformerConfig:
        """The model config the run trains: ``model_config``, else the default; with
        ``init_from``, the trained model's (a ``model_config`` given must equal it). Checked."""
        if self.base_config is not None:
            c = self.config
            check_trained_config(c.init_from, self.base_config, model_config, c.lora_rank, c.freeze)
            model_config = self.base_config
        model_config = model_config or self.default_model_config()
        self.check_model_config(model_config)
        return model_config

    def check_model_config(self, model_config: TransformerConfig) -> None:
        """Refuse a model whose vocabulary cannot hold the tokenizer's ids, or whose context is
        shorter than a window."""
        if model_config.vocab_size < self.tokenizer.vocab_size:
            raise ValueError(f"vocab_size: the {type(self.tokenizer).__name__} has "
                             f"{self.tokenizer.vocab_size} tokens, the model config only "
                             f"{model_config.vocab_size}")
        if model_config.max_len < self.config.block_size:
            raise ValueError(f"block_size: windows of {self.config.block_size} tokens need a model "
                             f"max_len of at least {self.config.block_size}, the model config has "
                             f"{model_config.max_len}")

    def summary(self) -> str:
        c, name = self.config, type(self.tokenizer).__name__
        return (f"text {self.source['text']} ({self.source['characters']:,} characters, the last "
                f"{len(self.data.val_text):,} for validation; {name} of {self.tokenizer.vocab_size} "
                f"tokens; windows of {c.block_size})")

    def info(self) -> dict:
        """What a checkpoint records: the text (path, SHA-256), the tokenizer, the windows."""
        return {"name": TEXT_TASK, "model": "decoder-only", "format": "text", **self.source,
                "tokenizer": type(self.tokenizer).__name__, "tokenizer_dir": TOKENIZER_DIR,
                "block_size": self.config.block_size}

    def save(self, out_dir: Path) -> None:
        """Keep the tokenizer in the run directory (``load_checkpoint`` reads it back)."""
        self.tokenizer.save(out_dir / TOKENIZER_DIR)

    def batch(self, rng: np.random.Generator) -> TextBatch:
        ids, labels = random_windows(self.data.train_ids, self.config.batch_size,
                                     self.config.block_size, rng)            # (B, T) each
        return TextBatch(ids, labels)

    def sample(self, model: Module) -> str:
        """The continuation of the fixed prompt, with a Generator of its own fixed seed."""
        room = model.config.max_len + 1 - self.prompt_ids.shape[1]     # the last token is never fed
        new = decode.generate(model, self.prompt_ids, min(SAMPLE_CHARS, room),
                              temperature=SAMPLE_TEMPERATURE, rng=np.random.default_rng(SAMPLE_SEED))
        return self.tokenizer.decode(new[0].tolist())[:SAMPLE_CHARS]

    def judge(self, model: Module) -> dict:
        bpc = bits_per_char(model, self.tokenizer, self.data.val_text, self.config.block_size)
        return {"bpc": float(bpc), "sample": self.sample(model)}

    def better(self, entry: dict, best: dict | None) -> bool:
        return best is None or entry["bpc"] < best["bpc"]

    def solved(self, entry: dict) -> bool:
        return False

    def describe(self, entry: dict) -> str:
        return f"validation {entry['bpc']:.4f} bits per character; {self.prompt!r} -> {entry['sample']!r}"
