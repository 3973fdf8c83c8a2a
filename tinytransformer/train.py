"""The training loop: batches, one visible training step, evaluation, early stop, checkpoints.

Legend: B batch, T time, V vocabulary size.

Every step is the same five lines (``step.py``), in this order:

    model.zero_grad()
    logits = model(src, tgt_in)            # decoder-only: model(ids)
    loss = crit(logits, labels)            # PAD labels are ignored
    model.backward(crit.backward())
    clip (if asked) and measure the gradient norm
    opt.lr = schedule(step); opt.step()

Every ``eval_every`` steps the model decodes the fixed held-out set greedily
(``tasks.eval_set``: every length equally often, its own seed) and is judged by
exact match (the whole output right, EOS included), overall and at its worst
length, and by token accuracy. The run stops at the first evaluation that
*solves* the task: exact match >= ``target`` overall and >= ``target_worst`` at
every length (an average can hide a length the model has not learnt: the
longest is the hardest). The best evaluation's parameters are saved as
``best.npz``, so the number the run reports is the one it saved. ``last.npz``
holds everything needed to resume (parameters, optimizer moments, step, the data
Generator's and the dropout Generator's states), and ``--resume`` from it reaches
the very same parameters, bit for bit, as a run that was never interrupted. Evaluation draws no random numbers
(dropout is off in eval mode and the held-out set has its own seed), so it
never shifts the training stream. How the run directory stays consistent
under kills (the history inside last.npz, best.npz written after it, a lock
against a second trainer) is ``rundir.py``'s.

A text (``task="text"``, ``text_task.TextTask``) is trained on random windows and judged
by validation bits per character, with no early stop: the run spends its budget, ``steps``
or ``minutes`` (wall-clock time over all its sessions), whichever runs out first.

The loop itself (``_train``) is a dozen lines over named steps: ``ToyTask`` says where
batches come from and how a model is judged (another kind of task gives the same methods),
and ``TrainingRun`` (``training_run.py``) carries the run's state from step to step and does
each step: restore or create the run directory, train one step, evaluate, save, finish.

Seeds: ``seed`` is split (``SeedSequence.spawn``) into two independent streams,
one for the model (initial weights, then dropout masks) and one for the
training batches.
"""

from __future__ import annotations

import sys
from contextlib import nullcontext
from pathlib import Path

import numpy as np

from . import optim
from .checkpoint import read_checkpoint
from .evaluate import eval_rank, evaluate, solved
from .finetune import check_trained_config, start_from
from .nn.loss import CrossEntropyLoss
from .nn.module import Module
from .nn.transformer import TransformerConfig
from .progress import StopRequest
from .rundir import RunDir
from .tasks import EVAL_SEED, Batch, LMBatch, Vocab, eval_set, lm_eval_set, make_batch, make_lm_batch
from .threads import threads
from .text_task import TextTask
from .train_config import MODEL_DEFAULTS, MODEL_KINDS, TEXT_TASK, TrainConfig
from .training_run import TrainingRun, TrainResult, check_resume   # noqa: F401 (re-exported)
from .vocab import check_special_ids

__all__ = ["TrainConfig", "TrainResult", "train", "evaluate", "solved", "default_model_config",
           "held_out", "task_vocab"]


# ---- building the pieces ------------------------------------------------------------------


def task_vocab(config: TrainConfig) -> Vocab:
    """The task's vocabulary; the decoder-only format needs SEP between source and target."""
    return Vocab(config.n_symbols, with_sep=config.model == "decoder-only")


def longest_input(config: TrainConfig, max_len: int | None = None) -> int:
    """Longest sequence the model sees for sources of up to ``max_len`` symbols:
    [BOS]+target (L+1) for the encoder-decoder, s SEP t (2L+1) for the decoder-only model."""
    L = config.max_len if max_len is None else max_len
    return 2 * L + 1 if config.model == "decoder-only" else L + 1


def default_model_config(config: TrainConfig, **overrides) -> TransformerConfig:
    """TransformerConfig's defaults with the task's vocab_size and the model kind's own
    fields (``MODEL_DEFAULTS``: a decoder-only model gets 4 blocks and no encoder);
    ``overrides`` win."""
    defaults = {"vocab_size": task_vocab(config).size, **MODEL_DEFAULTS[config.model]}
    model_config = TransformerConfig(**{**defaults, **overrides})
    check_model_config(config, model_config)
    return model_config


def check_model_config(config: TrainConfig, model_config: TransformerConfig) -> None:
    """Refuse a model config that does not fit the task: its vocabulary (size and special ids)
    or its longest sequence."""
    check_special_ids(model_config)
    vocab = task_vocab(config)
    if model_config.vocab_size != vocab.size:
        raise ValueError(f"vocab_size: the task needs {vocab.size} ({config.n_symbols} symbols + "
                         f"PAD/BOS/EOS{'/SEP' if vocab.with_sep else ''}), the model config has "
                         f"{model_config.vocab_size}")
    if longest_input(config) > model_config.max_len:
        raise ValueError(f"max_len: sequences of {config.max_len} symbols need a model max_len of "
                         f"at least {longest_input(config)}, the model config has {model_config.max_len}")


def checkpoint_model_kind(path) -> str:
    """"encoder-decoder" or "decoder-only": the kind of model a run or checkpoint holds."""
    meta = read_checkpoint(path)[0]
    return next(kind for kind, cls in MODEL_KINDS.items() if cls.__name__ == meta["model_class"])


def init_model_config(config: TrainConfig, model_config: TransformerConfig | None = None
                      ) -> TransformerConfig:
    """The model config of the trained run ``config.init_from``, checked against the new task
    (and against ``model_config``, if one is given: the sizes of a trained model cannot change)."""
    meta, _, file = read_checkpoint(config.init_from)
    kind = checkpoint_model_kind(file)
    if kind != config.model:
        raise ValueError(f"init_from: {file} holds a model of kind {kind!r}, the run asks for "
                         f"model {config.model!r} (--model)")
    base = TransformerConfig.from_dict(meta["config"])
    check_trained_config(file, base, model_config, None, ())
    task = meta.get("task") or {}
    try:
        check_model_config(config, base)
    except ValueError as err:
        raise ValueError(f"init_from: the model in {file} (trained on {task.get('name')} with "
                         f"{task.get('n_symbols')} symbols, lengths {task.get('min_len')}.."
                         f"{task.get('max_len')}) does not fit {config.task} with {config.n_symbols} "
                         f"symbols, lengths {config.min_len}..{config.max_len}: {err}") from None
    check_trained_config(file, base, None, config.lora_rank, config.freeze)
    return base


def run_model_config(config: TrainConfig, model_config: TransformerConfig | None,
                     text_task: TextTask | None = None) -> TransformerConfig:
    """The model config a run trains, checked against its task: ``model_config``, else the
    task's default; with ``init_from``, the trained model's (which cannot change). A text run's
    depends on its tokenizer: ``text_task``."""
    if config.task == TEXT_TASK:
        return text_task.fit_model_config(model_config)
    if config.init_from is not None:
        model_config = init_model_config(config, model_config)
    model_config = model_config or default_model_config(config)
    check_model_config(config, model_config)
    return model_config


def build_model(config: TrainConfig, model_config: TransformerConfig,
                rng: np.random.Generator) -> Module:
    """A new model drawn from ``rng``, or, with ``init_from``, the trained one to fine-tune."""
    if config.init_from is None:
        return MODEL_KINDS[config.model](model_config, rng=rng)
    return start_from(config.init_from, rng, config.lora_rank, config.lora_alpha, config.freeze,
                      config.lora_targets)


def build_optimizer(config: TrainConfig, model: Module) -> optim.Optimizer:
    if config.optimizer == "sgd":
        return optim.SGD(model, lr=config.lr, momentum=config.momentum,
                         weight_decay=config.weight_decay)
    cls = optim.AdamW if config.optimizer == "adamw" else optim.Adam
    return cls(model, lr=config.lr, betas=config.betas, eps=config.eps,
               weight_decay=config.weight_decay)


def build_schedule(config: TrainConfig):
    """step -> learning rate, step counting from 1 (the first update)."""
    if config.schedule == "inverse_sqrt":
        return optim.get_schedule("inverse_sqrt", peak_lr=config.lr, warmup=config.warmup)
    if config.schedule == "cosine":
        return optim.get_schedule("cosine", peak_lr=config.lr, total_steps=config.decay_steps,
                                  warmup=config.warmup, min_lr=config.min_lr)
    return optim.get_schedule("constant", lr=config.lr, warmup=config.warmup)


def seeded_generators(seed: int) -> tuple[np.random.Generator, np.random.Generator]:
    """(model_rng, data_rng): independent streams for weights/dropout and for batches."""
    model_seq, data_seq = np.random.SeedSequence(seed).spawn(2)
    return np.random.default_rng(model_seq), np.random.default_rng(data_seq)


def draw_batch(config: TrainConfig, vocab: Vocab, rng: np.random.Generator) -> Batch | LMBatch:
    draw = make_lm_batch if config.model == "decoder-only" else make_batch
    return draw(config.task, vocab, config.batch_size, config.min_len, config.max_len, rng)


def held_out(config: TrainConfig, min_len: int | None = None, max_len: int | None = None,
             n: int | None = None, seed: int = EVAL_SEED) -> Batch | LMBatch:
    """The fixed held-out set of the run's task (lengths of training unless given; another
    ``seed`` draws sequences the stop rule never saw)."""
    make = lm_eval_set if config.model == "decoder-only" else eval_set
    return make(config.task, task_vocab(config), config.eval_size if n is None else n,
                config.min_len if min_len is None else min_len,
                config.max_len if max_len is None else max_len, seed=seed)


# ---- the loop -----------------------------------------------------------------------------


def task_info(config: TrainConfig) -> dict:
    """What a checkpoint records about the task: enough to rebuild the vocabulary and data."""
    return {"name": config.task, "n_symbols": config.n_symbols, "min_len": config.min_len,
            "max_len": config.max_len, "model": config.model,
            "format": "lm" if config.model == "decoder-only" else "seq2seq"}


def train(config: TrainConfig | None = None, model_config: TransformerConfig | None = None,
          out_dir=None, resume: bool = False, stream=None) -> TrainResult:
    """Train a model on a toy task or a text; see the module docstring for what happens each step.

    ``model_config`` defaults to ``default_model_config(config)`` (a text's: ``TextTask``'s).
    ``out_dir``: the run directory (config.json, history.json, best.npz, last.npz), locked while training;
    None trains in memory and writes nothing. ``resume=True`` continues the run in
    ``out_dir`` from last.npz (from step 0 if it was stopped before saving one).
    Progress goes to ``stream`` (default stdout). Ctrl-C stops the run after the
    current step, saving last.npz; the result then says ``stopped == "interrupted"``.
    A second Ctrl-C aborts at once without saving (KeyboardInterrupt).
    """
    config = config or TrainConfig()
    # a text is read (and its tokenizer built) before anything is written: the model needs its size
    text_task = TextTask(config) if config.task == TEXT_TASK else None
    model_config = run_model_config(config, model_config, text_task)
    stream = sys.stdout if stream is None else stream
    out_dir = Path(out_dir) if out_dir is not None else None
    if resume and out_dir is None:
        raise ValueError("resume: needs out_dir, the run directory to continue")
    # Ctrl-C is a stop request from here on, before the run has anything to save
    with StopRequest(stream) as stop, RunDir(out_dir) if out_dir is not None else nullcontext():
        return _train(config, model_config, text_task, out_dir, resume, stream, stop)


def _train(config: TrainConfig, model_config: TransformerConfig, task, out_dir: Path | None,
           resume: bool, stream, stop: StopRequest) -> TrainResult:
    """The loop: train a step, evaluate when it is due, until the task is solved, the budget
    (steps or minutes) is spent or Ctrl-C asks to stop; then save and return. ``TrainingRun``
    holds the helpers. ``task``: the one already made, or None to make it now."""
    task = task_for(config) if task is None else task
    model_rng, data_rng = seeded_generators(config.seed)
    model = build_model(config, model_config, model_rng)
    crit = CrossEntropyLoss(ignore_index=model_config.pad_id, label_smoothing=config.label_smoothing)
    run = TrainingRun(config, model_config, task, model, build_optimizer(config, model),
                      build_schedule(config), crit, data_rng, out_dir, stream)
    resumed = resume and run.restore()
    if resumed and run.history["stopped"] == "target":
        return run.already_solved()
    if not resumed:
        run.create()
    run.announce(resumed)
    try:
        with stop.reporting_to(run.progress), threads():      # BLAS held once for the whole loop
            if run.evaluation_cut_short():
                run.evaluate()
            while run.stopped == "budget" and run.step < config.steps:
                if stop.requested:
                    run.stopped = "interrupted"
                    break
                if run.out_of_time:
                    run.stopped = "minutes"
                    break
                run.train_one_step()
                if run.evaluation_due():
                    run.evaluate()
    except KeyboardInterrupt:
        # Ctrl-C outside the main thread, or a second Ctrl-C: the step in flight is dropped
        if not run.drop_step_in_flight(aborted=stop.aborted):
            raise
    except FloatingPointError as err:
        raise run.diverged(err) from None
    return run.finish()


def task_for(config: TrainConfig) -> ToyTask | TextTask:
    """The task object the loop trains on and judges by: a toy task, or a text (``text_task.py``)."""
    return TextTask(config) if config.task == TEXT_TASK else ToyTask(config)


class ToyTask:
    """What the training loop needs of a toy task: where its batches come from and how a
    model is judged on the fixed held-out set (greedy decoding, exact match).

    Another kind of task plugs into the loop by giving the same methods: ``batch(rng)``,
    ``judge(model)`` (a dict of scores, recorded as the evaluation), ``better``, ``solved``,
    ``describe`` (one evaluation, for the progress line), ``summary``, ``info`` (what a
    checkpoint records about it) and ``save(out_dir)`` (what the run directory keeps of it).
    """

    def __init__(self, config: TrainConfig):
        self.config, self.vocab = config, task_vocab(config)
        self.eval_data = held_out(config)

    def summary(self) -> str:
        c = self.config
        return f"{c.task}, {c.n_symbols} symbols, lengths {c.min_len}..{c.max_len}"

    def info(self) -> dict:
        return task_info(self.config)

    def save(self, out_dir: Path) -> None:
        """Nothing to keep: the vocabulary and the held-out set follow from the config."""

    def batch(self, rng: np.random.Generator) -> Batch | LMBatch:
        return draw_batch(self.config, self.vocab, rng)

    def judge(self, model: Module) -> dict:
        scores = evaluate(model, self.eval_data)
        return {key: scores[key] for key in ("exact_match", "worst", "worst_length", "token_accuracy")}

    def better(self, entry: dict, best: dict | None) -> bool:
        """Whether evaluation ``entry`` beats ``best`` (None: there is none yet)."""
        return best is None or eval_rank(entry, self.config) > eval_rank(best, self.config)

    def solved(self, entry: dict) -> bool:
        return solved(entry, self.config)

    def describe(self, entry: dict) -> str:
        return (f"exact match {entry['exact_match']:.4f}, worst length {entry['worst_length']}: "
                f"{entry['worst']:.3f}, token accuracy {entry['token_accuracy']:.4f}")
