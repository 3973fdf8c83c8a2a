"""Saving and loading a model with everything needed to resume its training.

A checkpoint is ONE ``.npz`` file (``np.savez``, read back with
``allow_pickle=False``: no pickle, so loading a file never runs code). It holds

    params/<dotted name>      every parameter, as ``state_dict()`` lists them
                              (a tied matrix once, under its first name)
    optimizer/<...>           the optimizer's arrays (Adam's moments), if saved
    __meta__.json             a JSON document stored as a uint8 array of UTF-8
                              bytes: the model class and config, the dtype, the
                              step, the task, the optimizer's numbers (step
                              count, hyperparameters), the RNG states, extras

RNG states are ``Generator.bit_generator.state`` dicts; PCG64's state is a
128-bit integer, which JSON writes exactly (Python's json has no int limit).
The model's own Generators (the ones its Dropout layers draw masks from) are
saved and restored automatically; ``rng_states`` is for the caller's others,
such as the Generator that draws training batches.

One file rather than an .npz plus a .json sidecar, so that one ``os.replace``
swaps in a complete checkpoint: the file is written to a temporary name in the
same directory, flushed and fsync'ed, then renamed over the old one. A crash or
Ctrl-C in the middle leaves the previous checkpoint untouched. A truncated or
corrupted file fails to load with a ``CheckpointError`` (the zip format keeps a
CRC-32 of every member, checked on reading).

A run directory holds ``best.npz`` (the best evaluation so far: what the run
reports) and ``last.npz`` (the latest state: what ``--resume`` continues from);
``rundir.py`` keeps them consistent. A checkpoint never holds a non-finite
parameter: saving one is refused, and so is loading one.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np

from .nn.module import Module
from .nn.transformer import DecoderOnlyTransformer, Transformer, TransformerConfig

__all__ = ["save_checkpoint", "load_checkpoint", "CheckpointError"]

FORMAT = "tinytransformer-checkpoint"
VERSION = 1
META_KEY = "__meta__.json"
BEST, LAST = "best.npz", "last.npz"

MODEL_CLASSES: dict[str, type] = {
    "Transformer": Transformer,
    "DecoderOnlyTransformer": DecoderOnlyTransformer,
}


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, or that does not fit the model it is loaded into."""


# ---- atomic writes ------------------------------------------------------------------------


def atomic_write(path, write: Callable) -> Path:
    """Write a file so that ``path`` is either the old file or the complete new one.

    ``write(f)`` writes into a temporary file (binary mode) in the same directory;
    it is flushed, fsync'ed and renamed over ``path`` with ``os.replace`` (atomic on
    POSIX and Windows within one filesystem). On any error, Ctrl-C included, the
    temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(err, OSError) and err.errno is not None and err.filename is None:
            err.filename = str(path)  # a failed write() (disk full) names no file: say which one
        raise
    _fsync_directory(path.parent)     # make the rename itself durable
    return path


# the temporary names mkstemp gives in atomic_write: "." + final name + "." + 8 characters + ".tmp"
_TEMPORARY = re.compile(r"\..+\.[a-z0-9_]{8}\.tmp")


def remove_stale_temporaries(directory) -> list[Path]:
    """Delete the temporary files that ``atomic_write`` left in ``directory`` when its process
    was killed (``kill -9`` skips its cleanup). Only safe while no other process writes there,
    i.e. under the run directory's lock. Returns the paths removed."""
    directory = Path(directory)
    stale = [p for p in directory.glob(".*.tmp") if _TEMPORARY.fullmatch(p.name) and p.is_file()]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def _fsync_directory(directory: Path) -> None:
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_json(path, data) -> Path:
    """Write ``data`` as indented JSON, atomically (see ``atomic_write``)."""
    text = json.dumps(data, indent=2) + "\n"
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")))


# ---- JSON with arrays set aside -----------------------------------------------------------


def _split_arrays(obj, prefix: str, arrays: dict):
    """A JSON-ready copy of ``obj`` with each ndarray moved into ``arrays[prefix/...]``
    and replaced by ``{"__array__": key}``. NumPy scalars become Python numbers."""
    if isinstance(obj, np.ndarray):
        arrays[prefix] = obj
        return {"__array__": prefix}
    if isinstance(obj, dict):
        out = {}
        for key, value in obj.items():
            if not isinstance(key, str):
                raise TypeError(f"checkpoint: dictionary keys must be strings, got {key!r} in {prefix}")
            out[key] = _split_arrays(value, f"{prefix}/{key}", arrays)
        return out
    if isinstance(obj, (list, tuple)):
        return [_split_arrays(v, f"{prefix}/{i}", arrays) for i, v in enumerate(obj)]
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"checkpoint: cannot store {type(obj).__name__} at {prefix} "
                    f"(expected arrays, numbers, strings, lists and dicts)")


def _join_arrays(obj, arrays, file):
    """The inverse of ``_split_arrays``."""
    if isinstance(obj, dict):
        if set(obj) == {"__array__"}:
            if obj["__array__"] not in arrays:
                raise CheckpointError(f"{file}: incomplete checkpoint, array {obj['__array__']!r} "
                                      f"missing")
            return arrays[obj["__array__"]]
        return {key: _join_arrays(value, arrays, file) for key, value in obj.items()}
    if isinstance(obj, list):
        return [_join_arrays(v, arrays, file) for v in obj]
    return obj


# ---- the model's own random Generators ----------------------------------------------------


def model_generators(model: Module) -> list[np.random.Generator]:
    """Every distinct Generator held by a module of the tree as ``.rng`` (Dropout's masks),
    in tree order. A model built from one Generator has exactly one."""
    found: dict[int, np.random.Generator] = {}
    for _, module in model.named_modules():
        rng = getattr(module, "rng", None)
        if isinstance(rng, np.random.Generator):
            found.setdefault(id(rng), rng)
    return list(found.values())


def _set_generator_states(model: Module, states: list[dict], source) -> None:
    generators = model_generators(model)
    if len(generators) != len(states):
        raise CheckpointError(f"{source}: holds the state of {len(states)} random Generator(s) "
                              f"of the model, but the model has {len(generators)}")
    for generator, state in zip(generators, states):
        try:
            generator.bit_generator.state = state
        except (TypeError, ValueError, KeyError) as err:
            raise CheckpointError(f"{source}: a saved random Generator state is invalid: "
                                  f"{err}") from None


def non_finite(params: dict[str, np.ndarray]) -> list[str]:
    """The names of the arrays in ``params`` holding an inf or a NaN (a diverged model)."""
    return [name for name, value in params.items() if not np.isfinite(value).all()]


# ---- save and load ------------------------------------------------------------------------


def save_checkpoint(path, model: Module, optimizer=None, step: int = 0, task=None, extra=None,
                    rng_states=None) -> Path:
    """Write ``model`` (and optionally its optimizer) to a checkpoint; return the file's path.

    ``path``: a ``.npz`` file, or a directory (created if needed), which gets ``last.npz``.
    ``step``: optimizer steps taken. ``task``, ``extra``: anything JSON-ready (lists,
    dicts, numbers, strings; arrays are allowed and stored as arrays).
    ``rng_states``: ``bit_generator.state`` dicts of the caller's Generators, by name.
    The model's own Generators (dropout masks) are saved without being asked.
    """
    path = Path(path)
    if path.suffix != ".npz":
        path = path / LAST
    cls = type(model).__name__
    if cls not in MODEL_CLASSES or not isinstance(getattr(model, "config", None), TransformerConfig):
        raise TypeError(f"save_checkpoint: model must be one of {sorted(MODEL_CLASSES)}, "
                        f"got {type(model).__name__}")
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
        raise ValueError(f"step: expected an integer >= 0, got {step!r}")
    arrays: dict[str, np.ndarray] = {}
    params = model.state_dict()
    diverged = non_finite(params)
    if diverged:
        raise ValueError(f"save_checkpoint: parameter(s) {diverged} hold inf or NaN (a diverged "
                         f"model); a checkpoint never holds one")
    for name, value in params.items():
        arrays[f"params/{name}"] = value
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "model_class": cls,
        "config": model.config.to_dict(),
        "dtype": np.dtype(model.dtype).name,
        "params": list(params),
        "step": int(step),
        "task": _split_arrays(task, "task", arrays),
        "extra": _split_arrays(extra, "extra", arrays),
        "rng_states": _split_arrays(rng_states, "rng_states", arrays),
        "model_rng_states": _split_arrays([g.bit_generator.state for g in model_generators(model)],
                                          "model_rng_states", arrays),
        "optimizer": _split_arrays(optimizer.state_dict() if optimizer is not None else None,
                                   "optimizer", arrays),
    }
    arrays[META_KEY] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
    return atomic_write(path, lambda f: np.savez(f, **arrays))


def checkpoint_file(path, which: str | None = None) -> Path:
    """The checkpoint file ``path`` names: the file itself, or in a run directory
    ``<which>.npz`` ("best" or "last"); by default best.npz, else last.npz."""
    path = Path(path)
    if which not in (None, "best", "last"):
        raise ValueError(f"which: expected 'best', 'last' or None, got {which!r}")
    if path.is_dir():
        names = [f"{which}.npz"] if which else [BEST, LAST]
        for name in names:
            if (path / name).is_file():
                return path / name
        raise FileNotFoundError(f"no checkpoint in {path}: expected {' or '.join(names)} "
                                f"(a run directory written by tinytransformer train)")
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}: expected a run directory or a .npz file")
    return path


def read_checkpoint(path, which: str | None = None) -> tuple[dict, dict[str, np.ndarray], Path]:
    """(meta, arrays, file) of a checkpoint, checked for completeness; no model is built."""
    file = checkpoint_file(path, which)
    try:
        with open(file, "rb") as f, np.load(f, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}      # reads (and CRC-checks) every member
        meta = json.loads(arrays.pop(META_KEY).tobytes().decode("utf-8"))
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, KeyError) as err:
        what = "no metadata" if isinstance(err, KeyError) else f"{type(err).__name__}: {err}"
        raise CheckpointError(f"{file}: not a readable tinytransformer checkpoint, corrupted or "
                              f"truncated ({what})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{file}: not a tinytransformer checkpoint (format "
                              f"{meta.get('format') if isinstance(meta, dict) else None!r})")
    if meta.get("version") != VERSION:
        raise CheckpointError(f"{file}: checkpoint format version {meta.get('version')!r}, "
                              f"this tinytransformer reads version {VERSION}")
    if meta.get("model_class") not in MODEL_CLASSES:
        raise CheckpointError(f"{file}: unknown model class {meta.get('model_class')!r}, "
                              f"expected one of {sorted(MODEL_CLASSES)}")
    _check_meta(meta, file)
    missing = [name for name in meta["params"] if f"params/{name}" not in arrays]
    if missing:
        raise CheckpointError(f"{file}: incomplete checkpoint, parameter(s) {missing} missing")
    return meta, arrays, file


# what the metadata must hold, beyond format, version and model class; the rest
# (task, extra, rng_states, optimizer) is free-form and may be null
_META_FIELDS = {"config": (dict, "an object"), "dtype": (str, "a dtype name"),
                "params": (list, "a list of names"), "step": (int, "an integer"),
                "model_rng_states": (list, "a list of Generator states")}


def _check_meta(meta: dict, file: Path) -> None:
    for key, (kind, what) in _META_FIELDS.items():
        if key not in meta:
            raise CheckpointError(f"{file}: malformed checkpoint, the metadata has no {key!r}")
        if not isinstance(meta[key], kind) or isinstance(meta[key], bool):
            raise CheckpointError(f"{file}: malformed checkpoint, metadata {key!r} should be "
                                  f"{what}, got {meta[key]!r:.60}")
    if meta["step"] < 0:
        raise CheckpointError(f"{file}: malformed checkpoint, step {meta['step']} is negative")
    if not all(isinstance(name, str) for name in meta["params"]):
        raise CheckpointError(f"{file}: malformed checkpoint, metadata 'params' should list "
                              f"parameter names")
    try:
        floating = np.dtype(meta["dtype"]).kind == "f"
    except TypeError:
        floating = False
    if not floating:
        raise CheckpointError(f"{file}: malformed checkpoint, unknown dtype {meta['dtype']!r} "
                              f"(expected a floating type such as 'float32')")


def _config_differences(saved: TransformerConfig, config: TransformerConfig) -> list[str]:
    """Fields that differ; a checkpoint saved before a field existed holds that field's default."""
    saved, own = saved.to_dict(), config.to_dict()
    return [f"{key} {saved.get(key)!r} in the checkpoint, {own.get(key)!r} in the model"
            for key in sorted(set(saved) | set(own)) if saved.get(key) != own.get(key)]


def load_checkpoint(path, model: Module | None = None, which: str | None = None) -> tuple[Module, dict]:
    """Rebuild the model saved at ``path`` (a run directory or a .npz file) -> (model, info).

    In a run directory, ``which`` picks "best" (the default when it exists) or "last".
    With ``model`` given, the parameters are loaded into it in place instead; its
    class and config must be the checkpoint's, else a ``CheckpointError`` names
    every field that differs. The model's dropout Generators get their saved states.

    ``info``: "config" (TransformerConfig), "model_class", "step", "task", "extra",
    "rng_states" (the caller's Generator states, by name), "optimizer" (the
    optimizer's ``state_dict()`` or None), "dtype", "path" (the file read).
    """
    meta, arrays, file = read_checkpoint(path, which)
    cls = MODEL_CLASSES[meta["model_class"]]
    try:
        config = TransformerConfig.from_dict(meta["config"])
    except (TypeError, ValueError, KeyError) as err:
        raise CheckpointError(f"{file}: the saved model config is invalid: {err}") from None
    if model is None:
        model = cls(config, rng=np.random.default_rng(0), dtype=np.dtype(meta["dtype"]))
    else:
        if type(model) is not cls:
            raise CheckpointError(f"{file}: holds a {cls.__name__}, cannot load it into a "
                                  f"{type(model).__name__}")
        differences = _config_differences(config, model.config)
        if differences:
            raise CheckpointError(f"{file}: the checkpoint's config differs from the model's: "
                                  + "; ".join(differences))
    params = {name: arrays[f"params/{name}"] for name in meta["params"]}
    diverged = non_finite(params)
    if diverged:
        raise CheckpointError(f"{file}: parameter(s) {diverged} hold inf or NaN: the model it "
                              f"holds had diverged")
    try:
        model.load_state_dict(params)
    except (KeyError, ValueError) as err:
        raise CheckpointError(f"{file}: parameters do not fit the model: {err}") from None
    _set_generator_states(model, _join_arrays(meta["model_rng_states"], arrays, file), file)
    info = {
        "config": config,
        "model_class": meta["model_class"],
        "dtype": meta["dtype"],
        "step": meta["step"],
        **{key: _join_arrays(meta.get(key), arrays, file)
           for key in ("task", "extra", "rng_states", "optimizer")},
        "path": file,
    }
    return model, info
