"""The run directory: one trainer at a time, and files that agree with each other after any kill.

A run directory (``train --out DIR``) holds

    config.json    the run's TrainConfig and TransformerConfig, written when it starts
    last.npz       the latest state, what --resume continues from, and the run's history
                   (per-step losses, evaluations, best): the one source of truth
    best.npz       the parameters of the best evaluation: those of last.npz at that step
    history.json   a copy of the history in last.npz, for people and plots

Consistency. Every file is written whole or not at all (``atomic_write``: a
temporary file renamed over the final name), so a kill leaves each file as
it was before or after one write, never between. The history lives inside
last.npz, so it changes in the very rename that changes the parameters: it
cannot fall behind them. best.npz and history.json are derived copies, written
just after last.npz; a kill between two writes leaves a copy one save behind,
and ``resume_last`` (every resumed session starts with it) rewrites them from
last.npz. The copy is possible because best.npz is only ever written right
after an evaluation, with the parameters that last.npz got at that same step.

The lock is ``flock`` on the directory itself (on Windows, which cannot lock a
directory, ``msvcrt.locking`` on a ``.lock`` file in it): the operating system
releases it when its process ends, however it ends (``kill -9`` included), so a
dead trainer never leaves the directory locked.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .atomic import remove_stale_temporaries, save_json
from .checkpoint import BEST, LAST, CheckpointError, load_checkpoint, read_checkpoint, save_checkpoint

if os.name == "posix":
    import fcntl
else:
    import msvcrt

__all__ = ["RunDir", "RunDirError", "CONFIG_FILE", "HISTORY_FILE", "read_run_config",
           "read_history", "resume_last"]

CONFIG_FILE, HISTORY_FILE = "config.json", "history.json"
PER_STEP = ("step", "loss", "lr", "grad_norm")       # history lists with one value per step
LOCK_FILE = ".lock"                     # Windows only: POSIX locks the directory itself
FIGURES = "figures"                     # where ``tinytransformer plot`` writes by default


class RunDirError(Exception):
    """A run directory that cannot be used: not a directory, not writable, in use, unreadable."""


class RunDir:
    """``with RunDir(path):`` the directory exists, this process alone trains in it, and the
    temporary files of earlier killed writers are gone. The lock is released on exit."""

    def __init__(self, path):
        self.path, self.lock_fd = Path(path), None

    def __enter__(self) -> "RunDir":
        try:
            if self.path.exists() and not self.path.is_dir():
                raise RunDirError(f"run directory {self.path}: expected a directory, found a file")
            self.path.mkdir(parents=True, exist_ok=True)
            self.lock_fd = _open_for_locking(self.path)
        except OSError as err:
            raise RunDirError(f"cannot use {self.path} as a run directory: {err.strerror} "
                              f"({err.filename})") from None
        try:
            _lock(self.lock_fd)
        except OSError:
            os.close(self.lock_fd)
            self.lock_fd = None
            raise RunDirError(f"{self.path} is in use by another trainer: wait for it to end, "
                              f"or choose another directory") from None
        for directory in (self.path, self.path / FIGURES):
            if directory.is_dir():
                remove_stale_temporaries(directory)
        return self

    def __exit__(self, *exc) -> None:
        if self.lock_fd is not None:
            os.close(self.lock_fd)                       # closing it releases the lock
            self.lock_fd = None


def _open_for_locking(directory: Path) -> int:
    if os.name == "posix":                  # flock locks a directory: no lock file left behind
        return os.open(directory, os.O_RDONLY)
    return os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT)


def _lock(fd: int) -> None:
    """Lock ``fd`` without waiting; OSError if another process holds the lock."""
    if os.name == "posix":
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    else:
        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)


def read_run_config(run_dir) -> dict:
    """config.json of a run: {"train": {...}, "model": {...}, "model_class": ...}."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise RunDirError(f"cannot resume: {path} not found (is {run_dir} a run directory?)")
    try:
        saved = json.loads(path.read_text())
        if not (isinstance(saved.get("train"), dict) and isinstance(saved.get("model"), dict)):
            raise ValueError("no 'train' and 'model' sections")
    except (OSError, ValueError, AttributeError) as err:
        raise RunDirError(f"{path}: not a run configuration ({err})") from None
    return saved


def read_history(run_dir) -> dict | None:
    """The history of a run: the one in last.npz, else history.json (a run from before the
    history was kept in last.npz), else None."""
    run_dir = Path(run_dir)
    if (run_dir / LAST).is_file():
        extra = load_checkpoint(run_dir, which="last")[1]["extra"]
        if isinstance(extra, dict) and "history" in extra:
            return extra["history"]
    if (run_dir / HISTORY_FILE).is_file():
        try:
            return json.loads((run_dir / HISTORY_FILE).read_text())
        except ValueError as err:
            raise RunDirError(f"{run_dir / HISTORY_FILE}: not a readable history ({err})") from None
    return None


def resume_last(run_dir, model, optimizer, generators: dict, base=None) -> dict | None:
    """Load a run's last.npz into ``model``, ``optimizer`` and the named ``generators``
    (np.random.Generator by name, as saved in ``rng_states``) -> {"step", "seconds",
    "history"}; None when the run has no last.npz yet (it was stopped before its first
    checkpoint, so there is nothing to resume: it starts again from step 0).
    ``base``: the trained run a LoRA run's adapters are saved against (``save_checkpoint``).

    Rewrites best.npz and history.json where a kill left them one save behind last.npz.
    Anything missing or malformed in last.npz is a CheckpointError.
    """
    run_dir = Path(run_dir)
    if not (run_dir / LAST).is_file():
        return None
    _, info = load_checkpoint(run_dir, model=model, which="last")
    file, extra = info["path"], info["extra"]
    try:
        optimizer.load_state_dict(info["optimizer"])
        for name, generator in generators.items():
            generator.bit_generator.state = info["rng_states"][name]
        seconds = float(extra["seconds"])
        history = extra.get("history")
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise CheckpointError(f"{file}: cannot resume from it: {type(err).__name__}: {err}") from None
    if history is None:       # written before last.npz held the history: take history.json's
        history = _legacy_history(run_dir, info["step"])
    if not isinstance(history, dict):
        raise CheckpointError(f"{file}: cannot resume from it: its history is not a dictionary")
    best = history.get("best")
    if isinstance(best, dict) and best.get("step") == info["step"] \
            and _step_of(run_dir, "best") != info["step"]:
        # killed between last.npz and best.npz: last.npz holds the parameters of that evaluation
        save_checkpoint(run_dir / BEST, model, step=info["step"], task=info["task"],
                        extra={"eval": best}, base=base)
    save_json(run_dir / HISTORY_FILE, history)
    return {"step": info["step"], "seconds": seconds, "history": history}


def _step_of(run_dir: Path, which: str) -> int | None:
    """The step of a run's best.npz ("best") or last.npz ("last"); None if missing or unreadable."""
    try:
        return read_checkpoint(run_dir, which)[0]["step"]
    except (FileNotFoundError, CheckpointError):
        return None


def _legacy_history(run_dir: Path, step: int) -> dict:
    """history.json, cut back to ``step`` (it may have been written after last.npz)."""
    path = run_dir / HISTORY_FILE
    try:
        history = json.loads(path.read_text())
        keep = sum(s <= step for s in history["step"])
        for key in PER_STEP:
            del history[key][keep:]
        history["eval"] = [e for e in history["eval"] if e["step"] <= step]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"{run_dir / LAST} holds no history and {path} cannot be read "
                              f"({type(err).__name__}: {err})") from None
    return history
