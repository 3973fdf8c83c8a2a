"""The training loop: batches, one visible training step, evaluation, early stop, checkpoints.

Legend: B batch, T time, V vocabulary size.

Every step is the contract's step, in this order:

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

Seeds: ``seed`` is split (``SeedSequence.spawn``) into two independent streams,
one for the model (initial weights, then dropout masks) and one for the
training batches.
"""

from __future__ import annotations

import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import optim
from .atomic import save_json
from .checkpoint import BEST, LAST, load_checkpoint, non_finite, read_checkpoint, save_checkpoint
from .evaluate import eval_rank, evaluate, solved
from .finetune import start_from
from .nn.lora import lora_layers
from .nn.loss import CrossEntropyLoss
from .nn.module import Module
from .nn.transformer import TransformerConfig
from .progress import Progress, StopRequest
from .rundir import CONFIG_FILE, HISTORY_FILE, PER_STEP, RunDir, read_run_config, resume_last
from .step import train_step
from .tasks import EVAL_SEED, PAD, Batch, LMBatch, Vocab, eval_set, lm_eval_set, make_batch, make_lm_batch
from .threads import threads
from .train_config import MODEL_KINDS, TrainConfig

__all__ = ["TrainConfig", "TrainResult", "train", "evaluate", "solved", "default_model_config",
           "held_out", "task_vocab"]

@dataclass
class TrainResult:
    """What ``train`` returns. ``model`` holds the best evaluation's parameters (best.npz)."""
    model: Module
    history: dict
    best: dict | None            # {"step", "exact_match", "token_accuracy"} of the best evaluation
    steps: int                   # optimizer steps taken, over all sessions of the run
    seconds: float               # wall-clock time of the run, over all sessions
    stopped: str                 # "target", "budget" or "interrupted"
    out_dir: Path | None


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
    """The contract's default TransformerConfig with the task's vocab_size; ``overrides`` win.

    A decoder-only model has no encoder, so by default it gets as many blocks as the
    encoder-decoder has layers in all (2 + 2 = 4): about the same size (202k vs 236k
    parameters) and depth. With 2 blocks (102k parameters) it also learns reverse,
    but needed 2,500 steps instead of ~900.
    """
    defaults = {"vocab_size": task_vocab(config).size}
    if config.model == "decoder-only" and "n_decoder_layers" not in overrides:
        plain = TransformerConfig(vocab_size=1)
        defaults.update(n_encoder_layers=0,
                        n_decoder_layers=plain.n_encoder_layers + plain.n_decoder_layers)
    model_config = TransformerConfig(**{**defaults, **overrides})
    check_model_config(config, model_config)
    return model_config


def check_model_config(config: TrainConfig, model_config: TransformerConfig) -> None:
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
    if model_config is not None and model_config != base:
        differences = [f"{key} {value!r} (the trained model has {base.to_dict()[key]!r})"
                       for key, value in model_config.to_dict().items() if base.to_dict()[key] != value]
        raise ValueError(f"init_from: the model is the one in {file}; its config cannot change: "
                         + "; ".join(differences))
    task = meta.get("task") or {}
    try:
        check_model_config(config, base)
    except ValueError as err:
        raise ValueError(f"init_from: the model in {file} (trained on {task.get('name')} with "
                         f"{task.get('n_symbols')} symbols, lengths {task.get('min_len')}.."
                         f"{task.get('max_len')}) does not fit {config.task} with {config.n_symbols} "
                         f"symbols, lengths {config.min_len}..{config.max_len}: {err}") from None
    if kind == "decoder-only" and "encoder" in config.freeze:
        raise ValueError(f"freeze: the model in {file} is decoder-only, it has no encoder; "
                         f"expected decoder or embeddings")
    if config.lora_rank is not None and config.lora_rank > base.d_model:
        raise ValueError(f"lora_rank: expected an integer from 1 to min(in_features, out_features) = "
                         f"d_model = {base.d_model} for the attention projections of the model in "
                         f"{file}, got {config.lora_rank}")
    return base


def build_model(config: TrainConfig, model_config: TransformerConfig,
                rng: np.random.Generator) -> Module:
    """A new model drawn from ``rng``, or, with ``init_from``, the trained one to fine-tune."""
    if config.init_from is None:
        return MODEL_KINDS[config.model](model_config, rng=rng)
    return start_from(config.init_from, rng, config.lora_rank, config.lora_alpha, config.freeze,
                      config.lora_targets)


def finetuning_note(config: TrainConfig, model: Module) -> str:
    """How a fine-tuning run trains, for the progress header ('' for a run from scratch)."""
    if config.init_from is None:
        return ""
    adapted = {attribute for _, _, attribute, _ in lora_layers(model)}    # the targets the model has
    how = (f"LoRA rank {config.lora_rank} on {', '.join(t for t in config.lora_targets if t in adapted)}"
           if config.lora_rank is not None else
           f"{' and '.join(config.freeze)} frozen" if config.freeze else "every weight")
    return f"; fine-tuning {config.init_from}, {how}"


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


def _new_history(config: TrainConfig) -> dict:
    return {"step": [], "loss": [], "lr": [], "grad_norm": [], "eval": [], "target": config.target,
            "target_worst": config.target_worst,
            "task": config.task, "model": config.model, "best": None, "stopped": None, "seconds": 0.0}


def check_resume(out_dir, config: TrainConfig, model_config: TransformerConfig) -> None:
    """Raise unless the run in ``out_dir`` was started with these configs (only ``steps`` may differ)."""
    saved = read_run_config(out_dir)
    # a run saved before a field existed (norm, rope_base, lora_targets) has that field's default
    had = {"train": TrainConfig.from_dict(saved["train"]).to_dict(),
           "model": TransformerConfig.from_dict(saved["model"]).to_dict()}
    differences = []
    for kind, asked in (("train", config.to_dict()), ("model", model_config.to_dict())):
        for key in sorted(set(had[kind]) | set(asked)):
            if key not in ("steps", "log_every") and had[kind].get(key) != asked.get(key):
                differences.append(f"{key} {asked.get(key)!r} (the run has {had[kind].get(key)!r})")
    if differences:
        raise ValueError(f"cannot resume {out_dir} with a different configuration: "
                         + "; ".join(differences) + ". Only steps may change on resume")


def train(config: TrainConfig | None = None, model_config: TransformerConfig | None = None,
          out_dir=None, resume: bool = False, stream=None) -> TrainResult:
    """Train a model on a toy task; see the module docstring for what happens each step.

    ``model_config`` defaults to ``default_model_config(config)``. ``out_dir``: the run
    directory (config.json, history.json, best.npz, last.npz), locked while training;
    None trains in memory and writes nothing. ``resume=True`` continues the run in
    ``out_dir`` from last.npz (from step 0 if it was stopped before saving one).
    Progress goes to ``stream`` (default stdout). Ctrl-C stops the run after the
    current step, saving last.npz; the result then says ``stopped == "interrupted"``.
    A second Ctrl-C aborts at once without saving (KeyboardInterrupt).
    """
    config = config or TrainConfig()
    if config.init_from is not None:
        model_config = init_model_config(config, model_config)
    model_config = model_config or default_model_config(config)
    check_model_config(config, model_config)
    stream = sys.stdout if stream is None else stream
    out_dir = Path(out_dir) if out_dir is not None else None
    if resume and out_dir is None:
        raise ValueError("resume: needs out_dir, the run directory to continue")
    # Ctrl-C is a stop request from here on, before the run has anything to save
    with StopRequest(stream) as stop, RunDir(out_dir) if out_dir is not None else nullcontext():
        return _train(config, model_config, out_dir, resume, stream, stop)


def _train(config: TrainConfig, model_config: TransformerConfig, out_dir: Path | None,
           resume: bool, stream, stop: StopRequest) -> TrainResult:
    vocab = task_vocab(config)
    model_rng, data_rng = seeded_generators(config.seed)
    model = build_model(config, model_config, model_rng)
    opt = build_optimizer(config, model)
    # a LoRA run saves its adapters only, against the trained run's checkpoint
    base = config.init_from if config.lora_rank is not None else None
    schedule = build_schedule(config)
    crit = CrossEntropyLoss(ignore_index=PAD, label_smoothing=config.label_smoothing)
    eval_data = held_out(config)
    history, step, elapsed, best_state = _new_history(config), 0, 0.0, None

    if resume:
        check_resume(out_dir, config, model_config)
        state = resume_last(out_dir, model, opt, {"data": data_rng}, base=base)
        if state is None:
            stream.write(f"{out_dir} holds no {LAST}: the run was stopped before its first "
                         f"checkpoint, so it starts again from step 0\n")
            resume = False
    if resume:
        step, elapsed, history = state["step"], state["seconds"], state["history"]
        history["target"], history["target_worst"] = config.target, config.target_worst
        if (out_dir / BEST).is_file():
            best_state = load_checkpoint(out_dir, which="best")[0].state_dict()
        if history["stopped"] == "target":
            stream.write(f"{out_dir}: already reached the target at step {history['best']['step']}; "
                         f"nothing to do\n")
            model.load_state_dict(best_state)
            return TrainResult(model, history, history["best"], step, elapsed, "target", out_dir)
        if step >= config.steps:
            stream.write(f"{out_dir}: the run is already at step {step}, its budget is "
                         f"{config.steps}: give a larger steps (--steps) to continue it\n")
    elif out_dir is not None:
        if (out_dir / LAST).exists():
            raise FileExistsError(f"{out_dir} already holds a run: continue it with resume "
                                  f"(--resume), or choose another directory")
        save_json(out_dir / CONFIG_FILE, {"train": config.to_dict(), "model": model_config.to_dict(),
                                          "model_class": type(model).__name__})

    progress = Progress(stream, config.steps, config.log_every, step, elapsed)
    progress.print(f"{'Resuming' if resume else 'Training'} the {config.model} model (training "
                   f"{model.num_parameters(trainable_only=True):,} of {model.num_parameters():,} "
                   f"parameters{finetuning_note(config, model)}) on {config.task}, {config.n_symbols} "
                   f"symbols, lengths {config.min_len}..{config.max_len}, seed {config.seed}"
                   + (f", from step {step}" if resume else "")
                   + (f"; run directory {out_dir}" if out_dir else ""))

    def check_finite() -> None:
        diverged = non_finite(model.state_dict())
        if diverged:
            raise FloatingPointError(f"parameter(s) {diverged[:3]}{' ...' if len(diverged) > 3 else ''}"
                                     f" hold inf or NaN after the update; nothing is saved")

    def save_last(best_improved: bool = False) -> None:
        """last.npz (with the history), then the copies derived from it (see rundir.py)."""
        nonlocal saved_step
        if out_dir is None:
            return
        check_finite()
        history["seconds"] = round(progress.elapsed(), 3)
        save_checkpoint(out_dir / LAST, model, opt, step=step, task=task_info(config),
                        extra={"seconds": history["seconds"], "history": history},
                        rng_states={"data": data_rng.bit_generator.state}, base=base)
        saved_step = step
        if best_improved:
            save_checkpoint(out_dir / BEST, model, step=step, task=task_info(config),
                            extra={"eval": history["best"]}, base=base)
        save_json(out_dir / HISTORY_FILE, history)

    def resume_hint() -> str:
        if saved_step is None:
            return ""
        return (f" {out_dir / LAST} holds step {saved_step}; continue with: tinytransformer "
                f"train --out {out_dir} --resume")

    def run_eval() -> bool:
        """Evaluate at ``step``; keep the best; True when the target is reached."""
        nonlocal best_state
        check_finite()
        t0 = time.perf_counter()
        scores = evaluate(model, eval_data)
        entry = {"step": step, "exact_match": scores["exact_match"], "worst": scores["worst"],
                 "worst_length": scores["worst_length"], "token_accuracy": scores["token_accuracy"],
                 "seconds": round(progress.elapsed(), 3)}
        history["eval"].append(entry)
        improved = history["best"] is None or \
            eval_rank(entry, config) > eval_rank(history["best"], config)
        if improved:
            history["best"] = entry
            best_state = model.state_dict()
        note = f"  (best so far, saved to {BEST})" if out_dir is not None else "  (best so far)"
        progress.print(f"eval at step {step}: exact match {entry['exact_match']:.4f}, worst length "
                       f"{entry['worst_length']}: {entry['worst']:.3f}, token accuracy "
                       f"{entry['token_accuracy']:.4f}{note if improved else ''}"
                       f"  [{time.perf_counter() - t0:.1f} s]")
        save_last(best_improved=improved)
        return solved(entry, config)

    stopped = "budget"
    data_state, drawn = None, step
    saved_step = step if resume else None           # the step last.npz holds
    try:
        with stop.reporting_to(progress), threads():      # BLAS held once for the whole loop
            # a resumed run whose evaluation at this step was cut short does it now
            if step and step % config.eval_every == 0 and \
                    not any(e["step"] == step for e in history["eval"]) and run_eval():
                stopped = "target"
            while stopped == "budget" and step < config.steps:
                if stop.requested:
                    stopped = "interrupted"
                    break
                data_state, drawn = data_rng.bit_generator.state, step + 1
                t0 = time.perf_counter()
                batch = draw_batch(config, vocab, data_rng)
                opt.lr = schedule(step + 1)
                loss, grad_norm = train_step(model, crit, opt, batch, config.clip)   # step.py
                step += 1
                # ---- bookkeeping ----
                for key, value in zip(PER_STEP, (step, loss, opt.lr, grad_norm)):
                    history[key].append(value)
                progress.step(step, loss, opt.lr, grad_norm, batch.n_tokens, time.perf_counter() - t0)
                if (step % config.eval_every == 0 or step == config.steps) and run_eval():
                    stopped = "target"
    except KeyboardInterrupt:
        # Ctrl-C outside the main thread, or a second Ctrl-C: the step in flight is dropped
        updating = opt.step_count != step        # opt.step() began: an update in flight
        if updating or stop.aborted:
            progress.print(("Interrupted inside an update: the parameters are half-updated, so "
                            "they are not saved." if updating else "Aborted without saving.")
                           + resume_hint())
            raise
        if step != drawn:                      # the unfinished step's batch was drawn: undraw it
            data_rng.bit_generator.state = data_state
        kept = min(len(history[key]) for key in PER_STEP)
        for key in PER_STEP:
            del history[key][kept:]
        stopped = "interrupted"
    except FloatingPointError as err:
        progress.end_line()
        raise FloatingPointError(f"training diverged at step {drawn}: {err}. Try a lower --lr, "
                                 f"a longer --warmup or --clip 1.0") from None

    history["stopped"], history["seconds"] = stopped, progress.elapsed()
    save_last()
    if stopped == "interrupted":
        progress.print(f"Stopped at step {step}." + resume_hint())
    if best_state is not None:
        model.load_state_dict(best_state)
    return TrainResult(model, history, history["best"], step, history["seconds"], stopped, out_dir)
