"""What every command shares: the program's name, the one-line usage error, opening a model."""

from __future__ import annotations

import argparse

import numpy as np

from .. import decode
from ..checkpoint import CheckpointError
from ..open import open_model
from ..tasks import lm_prompt
from ..train import task_vocab
from ..train_config import TrainConfig

PROG = "tinytransformer"


class UsageError(Exception):
    """A mistake in what the user asked for: reported as one line, exit code 2."""


class Parser(argparse.ArgumentParser):
    def error(self, message):
        command = self.prog[len(PROG):].strip()
        raise UsageError(f"{command + ': ' if command else ''}{message} (see {self.prog} --help)")


def os_error(err: OSError) -> str:
    """'<file>: <reason>', what a failed read or write means, without the errno number."""
    return f"{err.filename}: {err.strerror}" if err.filename and err.strerror else str(err)


def open_run(path, which=None):
    """(model, tokens, info) of a run directory, a checkpoint file or a Hugging Face folder
    (``open.open_model``); a problem with it is one line."""
    try:
        return open_model(path, which=which)
    except (FileNotFoundError, CheckpointError, ValueError) as err:
        raise UsageError(str(err)) from None


def toy_config(info: dict) -> TrainConfig:
    """The TrainConfig of a toy run's task, as its checkpoint recorded it."""
    task = info["task"] or {}
    try:
        return TrainConfig(task=task["name"], n_symbols=task["n_symbols"], min_len=task["min_len"],
                           max_len=task["max_len"], model=task["model"])
    except (KeyError, TypeError, ValueError):
        raise UsageError(f"{info['path']}: the checkpoint does not say which task it was trained on "
                         f"(saved without task=); eval and generate need it") from None


def model_output(model, config: TrainConfig, src: np.ndarray) -> np.ndarray:
    """Greedy output token ids for one source (1-D), ending at EOS if the model emits one."""
    vocab = task_vocab(config)
    if config.model == "decoder-only":
        prompt = lm_prompt(src, vocab)[None]                                  # (1, L + 1)
        return decode.generate(model, prompt, model.config.max_len - prompt.shape[1])[0]
    return decode.greedy_decode(model, src[None], min(model.config.max_len, 2 * len(src) + 2))[0]
