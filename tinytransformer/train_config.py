"""TrainConfig: everything about a training run except the model's sizes, checked on creation."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from . import optim
from .finetune import FREEZE_PARTS
from .nn.transformer import DecoderOnlyTransformer, Transformer, config_from_dict
from .tasks import TASKS

__all__ = ["TrainConfig", "MODEL_KINDS", "MODEL_DEFAULTS", "OPTIMIZERS", "TEXT_TASK", "TOKENIZERS",
           "LORA_TARGETS", "LORA_ALPHA"]

MODEL_KINDS = {"encoder-decoder": Transformer, "decoder-only": DecoderOnlyTransformer}
# The model fields a training run of each kind sets over TransformerConfig's own defaults,
# unless given (train.default_model_config; `tinytransformer train --help` shows them).
# A model's number of blocks is always its config's n_decoder_layers; a decoder-only model
# has no encoder, so a run gives it as many blocks as the encoder-decoder has layers in all
# (2 + 2 = 4): about the same size (202k vs 236k parameters) and depth. With 2 blocks
# (102k parameters, TransformerConfig's own default) it also learns reverse, but needed
# 2,500 steps instead of ~900.
MODEL_DEFAULTS = {
    "encoder-decoder": {},
    "decoder-only": {"n_encoder_layers": 0, "n_decoder_layers": 4},
}
OPTIMIZERS = ("adam", "adamw", "sgd")
TEXT_TASK = "text"                     # language modelling on a text (text_task.py), beside the toy TASKS
TOKENIZERS = ("char", "byte", "bpe")

# LoRA's defaults for a fine-tuning run (--lora-rank): TrainConfig says why and what was measured
LORA_TARGETS = ("w_q", "w_k", "w_v", "w_o", "linear1", "linear2", "linear3")   # linear3: SwiGLU's
LORA_ALPHA = 16.0


@dataclass
class TrainConfig:
    """Everything about a run except the model's sizes (those are a TransformerConfig).

    The defaults are the reference run: reverse, 10 symbols, lengths 1..16, and
    the recipe that solves it on every seed measured (docs/reference-runs.md, "The recipe"):
    batch 64; Adam (0.9, 0.98, eps 1e-9); the learning rate rises linearly to 2e-3 over
    100 steps, then falls along half a cosine to 1e-4 at step 800 and stays there;
    gradients clipped to a global norm of 1.0; label smoothing 0.1; an evaluation every
    100 steps. The first recipe (the same peak, then 1/sqrt(step) decay, no clipping,
    no smoothing) kept the learning rate high while the model was almost right, so
    exact match swung by 5-50 points from one evaluation to the next.
    ``steps`` is a budget: the run stops earlier when an evaluation solves the task.
    ``decay_steps`` is the schedule's own horizon, not the budget, so a resumed run
    with a larger budget keeps the learning rate it had (it stays at ``min_lr``
    after the horizon).

    LoRA (``lora_rank`` r, with ``init_from``): adapters on every Linear whose attribute
    name is in ``lora_targets``, by default every attention projection (w_q, w_k, w_v,
    w_o) and every feed-forward Linear (linear1, linear2, and SwiGLU's linear3), each
    adding s * (x @ A) @ B with s = lora_alpha / r, on the same recipe as any run.
    ``lora_alpha`` stays 16 whatever the rank, as in the LoRA paper: Adam moves each entry
    of B by about the learning rate per step, whatever its gradient's size, so an entry of
    s * A @ B, a sum of r terms, moves by up to about s * r = alpha times that. With alpha
    fixed the step does not grow with r and a larger r adds directions; with alpha = r
    (``lora_alpha=None``) it grows with r.
    Measured by benchmarks/lora_defaults.py (its table: benchmarks/results/lora_defaults.md),
    from the reference recipe's copy and reverse runs, at rank 4: these defaults solved
    copy -> reverse and reverse -> sort on each of seeds 0-4 (held-out exact match
    >= 0.995 overall and at every length), in 600 to 1,200 steps. On seeds 0-1, within
    1,500 steps: adapters on w_q and w_v only (alpha = r, or 16) or on the attention only
    (alpha 16) solved none of the 4 runs; on every Linear, alpha 8 solved 2 (and alpha 32
    all 10 runs of seeds 0-4, in 600 to 900 steps: as good, measured once 16 was chosen).
    At rank 1 (5,632 adapters, fewer than w_q and w_v get at rank 4), these defaults solved
    none of those 4 runs in 3,000 steps (best exact match 0.86 to 0.993): the targets
    matter, and so does the rank.

    ``task="text"`` is language modelling on a text (``text_task.py``; its recipe is
    ``text_task.TEXT_DEFAULTS``, which ``text_task.text_train_config`` applies): ``text``,
    ``tokenizer``, ``vocab_size`` and ``block_size`` say what it reads and how.
    ``minutes`` is a second budget, wall-clock time over all sessions of a run (the time
    of the sessions before a ``--resume`` counts): the run stops at whichever budget it
    spends first. The learning-rate schedule counts steps, never seconds, so a resumed
    run takes exactly the steps an uninterrupted one would.
    """
    task: str = "reverse"
    n_symbols: int = 10
    min_len: int = 1
    max_len: int = 16
    model: str = "encoder-decoder"       # or "decoder-only" (the same task in LM format)
    batch_size: int = 64
    steps: int = 3000                    # the budget: at most this many optimizer steps
    optimizer: str = "adam"              # "adam", "adamw" or "sgd" (with momentum)
    lr: float = 2e-3                     # the peak learning rate
    schedule: str = "cosine"             # "cosine", "inverse_sqrt" or "constant"
    warmup: int = 100                    # linear warmup to lr over this many steps
    decay_steps: int = 800               # cosine: lr reaches min_lr at this step...
    min_lr: float = 1e-4                 # ...and stays there
    betas: tuple = (0.9, 0.98)
    eps: float = 1e-9
    weight_decay: float = 0.0
    momentum: float = 0.9                # SGD only
    clip: float | None = 1.0             # max global gradient norm; None = no clipping
    label_smoothing: float = 0.1
    eval_every: int = 100
    eval_size: int = 3200                # held-out sequences, every length equally often
    target: float = 0.995                # solved: held-out exact match >= target overall...
    target_worst: float = 0.995          # ...and >= target_worst at every length (at most 1 mistake
                                         # in 200: a margin over the 99% a kept model must hold on
                                         # fresh sequences, which a stop at exactly 99% missed once)
    seed: int = 0
    log_every: int = 100                 # progress line period when the output is not a terminal
    init_from: str | None = None         # fine-tuning: a trained run (directory or .npz) to start from
    lora_rank: int | None = None         # ...with LoRA adapters of this rank...
    lora_targets: tuple = LORA_TARGETS   # ...on the Linears of these attribute names...
    lora_alpha: float | None = LORA_ALPHA    # ...scaled by lora_alpha / lora_rank (None: alpha = rank)
    freeze: tuple = ()                   # ...or with these parts frozen: encoder, decoder, embeddings
    text: str | None = None              # task text: a UTF-8 file (None: Python's help topics)
    tokenizer: str = "char"              # task text: char, byte or bpe (trained on the training split)
    vocab_size: int | None = None        # task text, bpe: the vocabulary to learn (>= 256 tokens)
    block_size: int = 128                # task text: tokens in a training window (the context)
    minutes: float | None = None         # a wall-clock budget in minutes (None: the steps alone)

    def __post_init__(self):
        self.betas = tuple(self.betas)
        if self.task not in TASKS and self.task != TEXT_TASK:
            raise ValueError(f"task: expected one of {sorted(TASKS) + [TEXT_TASK]}, got {self.task!r}")
        if self.model not in MODEL_KINDS:
            raise ValueError(f"model: expected one of {sorted(MODEL_KINDS)}, got {self.model!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer: expected one of {list(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.schedule not in optim.SCHEDULES:
            raise ValueError(f"schedule: expected one of {list(optim.SCHEDULES)}, got {self.schedule!r}")
        for name in ("n_symbols", "min_len", "max_len", "batch_size", "steps", "decay_steps",
                     "eval_every", "eval_size", "log_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name}: expected an integer >= 1, got {value!r}")
        if self.min_len > self.max_len:
            raise ValueError(f"min_len ({self.min_len}) must not exceed max_len ({self.max_len})")
        if isinstance(self.warmup, bool) or not isinstance(self.warmup, (int, np.integer)) \
                or self.warmup < (1 if self.schedule == "inverse_sqrt" else 0):
            raise ValueError(f"warmup: expected an integer >= 1 for inverse_sqrt (>= 0 otherwise), "
                             f"got {self.warmup!r}")
        if self.schedule == "cosine" and self.warmup >= self.decay_steps:
            raise ValueError(f"warmup ({self.warmup}) must be below decay_steps "
                             f"({self.decay_steps}) for cosine")
        for name in ("lr", "min_lr"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float, np.integer, np.floating)) and math.isfinite(value)
                    and value >= 0 and (value > 0 or name == "min_lr")):
                raise ValueError(f"{name}: expected a finite number {'>= 0' if name == 'min_lr' else '> 0'}"
                                 f", got {value!r}")
        if self.min_lr > self.lr:
            raise ValueError(f"min_lr ({self.min_lr}) must not exceed the peak lr ({self.lr})")
        if self.clip is not None and not self.clip > 0:
            raise ValueError(f"clip: expected a number > 0 or None (no clipping), got {self.clip!r}")
        for name in ("target", "target_worst"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name}: expected an exact-match fraction in [0, 1], "
                                 f"got {getattr(self, name)!r}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing: expected a value in [0, 1), got {self.label_smoothing!r}")
        self._check_finetuning()
        self._check_text()

    def _check_text(self) -> None:
        if self.minutes is not None and not (isinstance(self.minutes, (int, float, np.integer, np.floating))
                                             and not isinstance(self.minutes, bool) and self.minutes > 0):
            raise ValueError(f"minutes: expected a number > 0 or None (no time budget), got {self.minutes!r}")
        if self.task != TEXT_TASK:
            return
        if self.model != "decoder-only":
            raise ValueError(f"model: the text task trains a decoder-only model (a language model), "
                             f"got {self.model!r}")
        if self.tokenizer not in TOKENIZERS:
            raise ValueError(f"tokenizer: expected one of {list(TOKENIZERS)}, got {self.tokenizer!r}")
        if isinstance(self.block_size, bool) or not isinstance(self.block_size, (int, np.integer)) \
                or self.block_size < 1:
            raise ValueError(f"block_size: expected an integer >= 1, got {self.block_size!r}")
        if self.tokenizer == "bpe":
            size = self.vocab_size
            if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 256:
                raise ValueError(f"vocab_size: a byte-level BPE holds the 256 bytes and the merges it "
                                 f"learns, so expected an integer >= 256 (--vocab-size), got {size!r}")
        elif self.vocab_size is not None:
            raise ValueError(f"vocab_size: only a bpe tokenizer learns a vocabulary of a chosen size; the "
                             f"{self.tokenizer} tokenizer's is fixed by the text, got {self.vocab_size!r}")

    def _check_finetuning(self) -> None:
        self.freeze = tuple(sorted(set(self.freeze)))
        unknown = [part for part in self.freeze if part not in FREEZE_PARTS]
        if unknown:
            raise ValueError(f"freeze: expected parts among {list(FREEZE_PARTS)}, got {unknown}")
        self.lora_targets = (self.lora_targets,) if isinstance(self.lora_targets, str) \
            else tuple(self.lora_targets)
        if not self.lora_targets or not set(self.lora_targets) <= {*LORA_TARGETS, "out_proj"}:
            raise ValueError(f"lora_targets: expected names among {[*LORA_TARGETS, 'out_proj']}, "
                             f"got {list(self.lora_targets)}")
        rank = self.lora_rank
        if rank is not None and (isinstance(rank, bool) or not isinstance(rank, (int, np.integer))
                                 or rank < 1):
            raise ValueError(f"lora_rank: expected an integer >= 1 (at most d_model), got {rank!r}")
        for name, given in (("lora_alpha", self.lora_alpha not in (None, LORA_ALPHA)),
                            ("lora_targets", self.lora_targets != LORA_TARGETS)):
            if given and rank is None:
                raise ValueError(f"{name}: sets LoRA adapters, so it needs lora_rank (--lora-rank)")
        if rank is not None and self.freeze:
            raise ValueError(f"lora_rank and freeze: LoRA already freezes every trained weight (only "
                             f"its adapters train), so freezing {', '.join(self.freeze)} as well means "
                             f"nothing; give --lora-rank or --freeze, not both")
        if (rank is not None or self.freeze) and self.init_from is None:
            raise ValueError(f"{'lora_rank' if rank is not None else 'freeze'}: fine-tunes a trained "
                             f"model, so it needs init_from (--init-from RUN_DIR)")

    def to_dict(self) -> dict:
        data = asdict(self)
        data["betas"], data["freeze"] = list(self.betas), list(self.freeze)
        data["lora_targets"] = list(self.lora_targets)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        return config_from_dict(cls, data)
