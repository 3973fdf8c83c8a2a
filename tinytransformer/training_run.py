"""One training run's session: its state and the named steps the training loop takes.

``train._train`` is the loop; a ``TrainingRun`` holds what the loop carries from step to step
(the model, its optimizer, the data Generator, the history, the step count, the best parameters
so far) and does each named step: restore the run directory or create it, announce the run,
train one step, evaluate, save last.npz (and best.npz), drop the step in flight after Ctrl-C,
finish. What depends on the task (where batches come from, how the model is judged and when
the task counts as solved) is the task object's: ``train.ToyTask`` for the toy tasks.

How the run directory stays consistent under kills (the history inside last.npz, best.npz
written after it, a lock against a second trainer) is ``rundir.py``'s.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import optim
from .atomic import save_json
from .checkpoint import BEST, LAST, load_checkpoint, non_finite, save_checkpoint
from .nn.lora import lora_layers
from .nn.loss import CrossEntropyLoss
from .nn.module import Module
from .nn.transformer import TransformerConfig
from .progress import Progress
from .rundir import CONFIG_FILE, HISTORY_FILE, PER_STEP, read_run_config, resume_last
from .step import train_step
from .train_config import TrainConfig

__all__ = ["TrainResult", "TrainingRun", "check_resume", "new_history"]


@dataclass
class TrainResult:
    """What ``train`` returns. ``model`` holds the best evaluation's parameters (best.npz)."""
    model: Module
    history: dict
    best: dict | None            # {"step", "exact_match", "token_accuracy"} of the best evaluation
    steps: int                   # optimizer steps taken, over all sessions of the run
    seconds: float               # wall-clock time of the run, over all sessions
    stopped: str                 # "target", "budget" (steps), "minutes" or "interrupted"
    out_dir: Path | None


def finetuning_note(config: TrainConfig, model: Module) -> str:
    """How a fine-tuning run trains, for the progress header ('' for a run from scratch)."""
    if config.init_from is None:
        return ""
    adapted = {attribute for _, _, attribute, _ in lora_layers(model)}    # the targets the model has
    how = (f"LoRA rank {config.lora_rank} on {', '.join(t for t in config.lora_targets if t in adapted)}"
           if config.lora_rank is not None else
           f"{' and '.join(config.freeze)} frozen" if config.freeze else "every weight")
    return f"; fine-tuning {config.init_from}, {how}"


def new_history(config: TrainConfig) -> dict:
    """An empty history: per-step lists, the evaluations, and how the run ended (None yet)."""
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
            if key not in ("steps", "minutes", "log_every") and had[kind].get(key) != asked.get(key):
                differences.append(f"{key} {asked.get(key)!r} (the run has {had[kind].get(key)!r})")
    if differences:
        raise ValueError(f"cannot resume {out_dir} with a different configuration: "
                         + "; ".join(differences) + ". Only steps and minutes may change on resume")


class TrainingRun:
    """One session of a run: the model, its optimizer and data, the history, and the named steps
    ``_train`` takes (restore or create the run directory, train a step, evaluate, save, finish).

    ``step`` counts optimizer steps over all sessions; ``stopped`` is "budget" while the loop
    runs, "target" once an evaluation solves the task, "minutes" once the time budget is
    spent (``out_of_time``, checked after every step), "interrupted" after Ctrl-C.
    """

    def __init__(self, config: TrainConfig, model_config: TransformerConfig, task, model: Module,
                 opt: optim.Optimizer, schedule, crit: CrossEntropyLoss, data_rng: np.random.Generator,
                 out_dir: Path | None, stream):
        self.config, self.model_config, self.task = config, model_config, task
        self.model, self.opt, self.schedule, self.crit, self.data_rng = model, opt, schedule, crit, data_rng
        self.out_dir, self.stream = out_dir, stream
        # a LoRA run saves its adapters only, against the trained run's checkpoint
        self.base = config.init_from if config.lora_rank is not None else None
        self.history, self.step, self.elapsed, self.best_state = new_history(config), 0, 0.0, None
        self.stopped = "budget"
        self.saved_step = None                              # the step last.npz holds
        self.data_state, self.drawn = None, 0               # before the step in flight drew its batch
        self.progress = None
        self.out_of_time = False                            # the minutes budget is spent

    # ---- before the loop ----

    def restore(self) -> bool:
        """Continue the run in out_dir from its last.npz; False when it has none (start afresh)."""
        out_dir = self.out_dir
        check_resume(out_dir, self.config, self.model_config)
        recorded = read_run_config(out_dir).get("task")
        if recorded is not None and recorded != self.task.info():
            changed = sorted(key for key in set(recorded) | set(self.task.info())
                             if recorded.get(key) != self.task.info().get(key))
            raise ValueError(f"cannot resume {out_dir}: its task was {recorded}, this one differs in "
                             f"{', '.join(changed)} (a text file that changed?)")
        state = resume_last(out_dir, self.model, self.opt, {"data": self.data_rng}, base=self.base)
        if state is None:
            self.stream.write(f"{out_dir} holds no {LAST}: the run was stopped before its first "
                              f"checkpoint, so it starts again from step 0\n")
            return False
        self.step, self.elapsed, self.history = state["step"], state["seconds"], state["history"]
        self.saved_step = self.drawn = self.step
        self.history["target"], self.history["target_worst"] = self.config.target, self.config.target_worst
        if (out_dir / BEST).is_file():
            self.best_state = load_checkpoint(out_dir, which="best")[0].state_dict()
        if self.history["stopped"] != "target" and self.step >= self.config.steps:
            self.stream.write(f"{out_dir}: the run is already at step {self.step}, its budget is "
                              f"{self.config.steps}: give a larger steps (--steps) to continue it\n")
        return True

    def already_solved(self) -> TrainResult:
        """The result of a restored run that had reached its target: nothing to train."""
        self.stream.write(f"{self.out_dir}: already reached the target at step "
                          f"{self.history['best']['step']}; nothing to do\n")
        self.model.load_state_dict(self.best_state)
        return TrainResult(self.model, self.history, self.history["best"], self.step, self.elapsed,
                           "target", self.out_dir)

    def create(self) -> None:
        """A new run: refuse a directory that holds one, record the configs in config.json."""
        if self.out_dir is None:
            return
        if (self.out_dir / LAST).exists():
            raise FileExistsError(f"{self.out_dir} already holds a run: continue it with resume "
                                  f"(--resume), or choose another directory")
        save_json(self.out_dir / CONFIG_FILE, {"train": self.config.to_dict(),
                                               "model": self.model_config.to_dict(),
                                               "model_class": type(self.model).__name__,
                                               "task": self.task.info()})
        self.task.save(self.out_dir)

    def announce(self, resumed: bool) -> None:
        """Start the progress report with what is trained, on what, from where."""
        config, model = self.config, self.model
        self.progress = Progress(self.stream, config.steps, config.log_every, self.step, self.elapsed)
        self.out_of_time = self.time_spent()
        if self.out_of_time:
            self.stream.write(f"{self.out_dir}: the run has taken {self.elapsed / 60:.1f} minutes, its "
                              f"budget is {config.minutes:g}: give a larger minutes (--minutes) to "
                              f"continue it\n")
        self.progress.print(f"{'Resuming' if resumed else 'Training'} the {config.model} model (training "
                            f"{model.num_parameters(trainable_only=True):,} of {model.num_parameters():,} "
                            f"parameters{finetuning_note(self.config, self.model)}) on {self.task.summary()}, seed "
                            f"{config.seed}" + (f", from step {self.step}" if resumed else "")
                            + (f"; run directory {self.out_dir}" if self.out_dir else ""))

    # ---- the loop's steps ----

    def time_spent(self) -> bool:
        """Whether the run, over all its sessions, has used its ``minutes``."""
        return self.config.minutes is not None and self.progress.elapsed() >= 60 * self.config.minutes

    def train_one_step(self) -> None:
        """Draw a batch, set the learning rate, take the step (step.py), record it."""
        self.data_state, self.drawn = self.data_rng.bit_generator.state, self.step + 1
        t0 = time.perf_counter()
        batch = self.task.batch(self.data_rng)
        self.opt.lr = self.schedule(self.step + 1)
        loss, grad_norm = train_step(self.model, self.crit, self.opt, batch, self.config.clip)
        self.step += 1
        for key, value in zip(PER_STEP, (self.step, loss, self.opt.lr, grad_norm)):
            self.history[key].append(value)
        self.progress.step(self.step, loss, self.opt.lr, grad_norm, batch.n_tokens,
                           time.perf_counter() - t0)
        self.out_of_time = self.time_spent()

    def evaluation_due(self) -> bool:
        """Every eval_every steps, and at the last step of either budget."""
        return self.step % self.config.eval_every == 0 or self.step == self.config.steps or self.out_of_time

    def evaluation_cut_short(self) -> bool:
        """A resumed run whose evaluation at this step was cut short does it now."""
        return bool(self.step) and self.step % self.config.eval_every == 0 and \
            not any(entry["step"] == self.step for entry in self.history["eval"])

    def evaluate(self) -> None:
        """Judge the model at this step; keep the best; save; stop when the task is solved."""
        self.check_finite()
        t0 = time.perf_counter()
        entry = {"step": self.step, **self.task.judge(self.model),
                 "seconds": round(self.progress.elapsed(), 3)}
        self.history["eval"].append(entry)
        improved = self.task.better(entry, self.history["best"])
        if improved:
            self.history["best"] = entry
            self.best_state = self.model.state_dict()
        note = f"  (best so far, saved to {BEST})" if self.out_dir is not None else "  (best so far)"
        self.progress.print(f"eval at step {self.step}: {self.task.describe(entry)}"
                            f"{note if improved else ''}  [{time.perf_counter() - t0:.1f} s]")
        self.save_last(best_improved=improved)
        if self.task.solved(entry):
            self.stopped = "target"

    def check_finite(self) -> None:
        diverged = non_finite(self.model.state_dict())
        if diverged:
            raise FloatingPointError(f"parameter(s) {diverged[:3]}{' ...' if len(diverged) > 3 else ''}"
                                     f" hold inf or NaN after the update; nothing is saved")

    def save_last(self, best_improved: bool = False) -> None:
        """last.npz (with the history), then the copies derived from it (see rundir.py)."""
        if self.out_dir is None:
            return
        self.check_finite()
        history, task = self.history, self.task.info()
        history["seconds"] = round(self.progress.elapsed(), 3)
        save_checkpoint(self.out_dir / LAST, self.model, self.opt, step=self.step, task=task,
                        extra={"seconds": history["seconds"], "history": history},
                        rng_states={"data": self.data_rng.bit_generator.state}, base=self.base)
        self.saved_step = self.step
        if best_improved:
            save_checkpoint(self.out_dir / BEST, self.model, step=self.step, task=task,
                            extra={"eval": history["best"]}, base=self.base)
        save_json(self.out_dir / HISTORY_FILE, history)

    # ---- after the loop ----

    def drop_step_in_flight(self, aborted: bool) -> bool:
        """After a KeyboardInterrupt: undo the unfinished step so the run can be saved; False when
        it cannot be (an update was under way, or a second Ctrl-C asked to abort)."""
        updating = self.opt.step_count != self.step        # opt.step() began: an update in flight
        if updating or aborted:
            self.progress.print(("Interrupted inside an update: the parameters are half-updated, so "
                                 "they are not saved." if updating else "Aborted without saving.")
                                + self.resume_hint())
            return False
        if self.step != self.drawn:                  # the unfinished step's batch was drawn: undraw it
            self.data_rng.bit_generator.state = self.data_state
        kept = min(len(self.history[key]) for key in PER_STEP)
        for key in PER_STEP:
            del self.history[key][kept:]
        self.stopped = "interrupted"
        return True

    def diverged(self, err: FloatingPointError) -> FloatingPointError:
        self.progress.end_line()
        return FloatingPointError(f"training diverged at step {self.drawn}: {err}. Try a lower --lr, "
                                  f"a longer --warmup or --clip 1.0")

    def resume_hint(self) -> str:
        if self.saved_step is None:
            return ""
        return (f" {self.out_dir / LAST} holds step {self.saved_step}; continue with: tinytransformer "
                f"train --out {self.out_dir} --resume")

    def finish(self) -> TrainResult:
        """Save last.npz, say where an interrupted run stands, and put the best parameters back."""
        self.history["stopped"], self.history["seconds"] = self.stopped, self.progress.elapsed()
        self.save_last()
        if self.stopped == "interrupted":
            self.progress.print(f"Stopped at step {self.step}." + self.resume_hint())
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)
        return TrainResult(self.model, self.history, self.history["best"], self.step,
                           self.history["seconds"], self.stopped, self.out_dir)
