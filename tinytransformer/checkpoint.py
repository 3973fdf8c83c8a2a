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

A model with LoRA adapters (``add_lora``) is saved with its adapter settings and the
dotted names of the layers that carry them, and every checkpoint lists the parameters
that are frozen, so loading rebuilds the adapters where they were and freezes what was
frozen. Saved with ``base=`` (the checkpoint its frozen
weights came from), the file holds the adapters alone, the base's path and a
fingerprint of the base weights (a SHA-256 of their names, dtypes, shapes and
bytes): a few kilobytes. Loading it loads the base first, and refuses a base
that is missing or is not the one the adapters were trained on. The base may
also be a Hugging Face folder (``is_pretrained_folder``), read with
``load_pretrained`` in the dtype the adapters were saved in.

A text run records in its task where its tokenizer is (``"tokenizer_dir"``, beside
the checkpoint file); ``load_checkpoint`` gives it back in ``info["tokenizer"]``.

A run directory holds ``best.npz`` (the best evaluation so far: what the run
reports) and ``last.npz`` (the latest state: what ``--resume`` continues from);
``rundir.py`` keeps them consistent. A checkpoint never holds a non-finite
parameter: saving one is refused, and so is loading one.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from pathlib import Path

import numpy as np

from .atomic import atomic_write
from .tokenizers import load_tokenizer
from .nn.lora import ADAPTERS, add_lora, lora_settings, merge_lora
from .nn.module import Module
from .nn.transformer import DecoderOnlyTransformer, Transformer, TransformerConfig
from .pretrained import load_pretrained

__all__ = ["save_checkpoint", "load_checkpoint", "CheckpointError", "fingerprint", "is_pretrained_folder"]

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


# ---- adapters and their base --------------------------------------------------------------


def is_adapter(name: str) -> bool:
    """Whether a dotted parameter name is a LoRA adapter's (``...w_q.lora_a``)."""
    return name.rpartition(".")[2] in ADAPTERS


def fingerprint(params: dict[str, np.ndarray]) -> str:
    """SHA-256 (hex) of the parameters' names, dtypes, shapes and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(params):
        value = np.ascontiguousarray(params[name])
        digest.update(f"{name}:{value.dtype.str}:{value.shape};".encode("utf-8"))
        digest.update(value.tobytes())
    return digest.hexdigest()


def is_pretrained_folder(path) -> bool:
    """Whether ``path`` is a Hugging Face model folder: config.json beside model.safetensors or
    its sharded index (a run directory has a config.json too, but no safetensors)."""
    path = Path(path)
    return path.is_dir() and (path / "config.json").is_file() and any(
        (path / name).is_file() for name in ("model.safetensors", "model.safetensors.index.json"))


def _base_record(file: Path, model: Module, base) -> dict:
    """What an adapter checkpoint at ``file`` says about its base: paths and fingerprint, and
    whether it is a pre-trained folder."""
    frozen_off = [name for name, _, _ in model.trainable_parameters() if not is_adapter(name)]
    if frozen_off:
        raise ValueError(f"base: an adapter checkpoint saves the adapters only, but {frozen_off[:3]} "
                         f"of the base weights are trainable and would be lost; save without base=")
    pretrained = is_pretrained_folder(base)
    base = (Path(base) if pretrained else checkpoint_file(base)).resolve()
    try:
        relative = os.path.relpath(base, file.resolve().parent)
    except ValueError:                          # another drive (Windows): no relative path
        relative = None
    own = {name: p for name, p, _ in model.named_parameters() if not is_adapter(name)}
    return {"path": str(base), "relative": relative, "fingerprint": fingerprint(own),
            "pretrained": pretrained}


def _base_state(record: dict, file: Path, dtype: str) -> dict[str, np.ndarray]:
    """The base weights an adapter checkpoint needs, checked against its fingerprint."""
    pretrained = record.get("pretrained", False)
    candidates = [Path(record["path"])]
    if record.get("relative"):
        candidates.append(file.resolve().parent / record["relative"])
    found = next((path for path in candidates
                  if (is_pretrained_folder(path) if pretrained else path.is_file())), None)
    if found is None:
        raise CheckpointError(f"{file}: holds LoRA adapters for the base "
                              f"{'model folder' if pretrained else 'checkpoint'} {record['path']}, "
                              f"which is missing; put it back there (or next to this run, as "
                              f"{record.get('relative')})")
    if pretrained:
        base = load_pretrained(found, np.dtype(dtype))
    else:
        base, _ = load_checkpoint(found)
    if lora_settings(base) is not None:         # a base fine-tuned with LoRA itself: merged
        merge_lora(base)
    state = base.state_dict()
    if fingerprint(state) != record["fingerprint"]:
        raise CheckpointError(f"{file}: holds LoRA adapters for base weights with fingerprint "
                              f"{record['fingerprint'][:12]}..., but {found} holds different ones "
                              f"({fingerprint(state)[:12]}...): the base run has changed (trained "
                              f"further?) or is another run")
    return state


# ---- where the adapters are, what is frozen -------------------------------------------------


def frozen_parameters(model: Module) -> list[str]:
    """Dotted names of every module's frozen parameters (a tied matrix under each of its names)."""
    return [f"{prefix}.{key}" if prefix else key for prefix, module in model.named_modules()
            for key in module.params if key in module.frozen]


def _freeze_as_saved(model: Module, names: list[str], file: Path) -> None:
    """Freeze exactly the parameters ``frozen_parameters`` listed when the model was saved."""
    modules, names = list(model.named_modules()), set(names)
    unknown = names - {f"{prefix}.{key}" if prefix else key for prefix, module in modules
                       for key in module.params}
    if unknown:
        raise CheckpointError(f"{file}: lists frozen parameter(s) {sorted(unknown)[:3]} the model "
                              f"does not have")
    for prefix, module in modules:
        module.frozen = {key for key in module.params if (f"{prefix}.{key}" if prefix else key) in names}


def _add_saved_adapters(model: Module, lora: dict, file: Path) -> None:
    """Put adapters where the saved model had them: on the layers ``lora["layers"]`` names, or
    (a file written before it was recorded) on every layer named like one of ``lora["targets"]``."""
    if lora.get("layers") is None:
        places = [(model, tuple(lora["targets"]))]
    else:
        modules = dict(model.named_modules())
        by_parent: dict[str, list[str]] = {}
        for name in lora["layers"]:
            parent, _, attribute = name.rpartition(".")
            by_parent.setdefault(parent, []).append(attribute)
        missing = sorted(set(by_parent) - set(modules))
        if missing:
            raise CheckpointError(f"{file}: holds LoRA adapters under {missing[:3]}, which the "
                                  f"model does not have")
        places = [(modules[parent], tuple(attributes)) for parent, attributes in by_parent.items()]
    try:
        for module, targets in places:
            add_lora(module, lora["rank"], lora["alpha"], targets)
    except ValueError as err:
        raise CheckpointError(f"{file}: its LoRA settings do not fit its model: {err}") from None


# ---- save and load ------------------------------------------------------------------------


def save_checkpoint(path, model: Module, optimizer=None, step: int = 0, task=None, extra=None,
                    rng_states=None, base=None) -> Path:
    """Write ``model`` (and optionally its optimizer) to a checkpoint; return the file's path.

    ``path``: a ``.npz`` file, or a directory (created if needed), which gets ``last.npz``.
    ``step``: optimizer steps taken. ``task``, ``extra``: anything JSON-ready (lists,
    dicts, numbers, strings; arrays are allowed and stored as arrays).
    ``rng_states``: ``bit_generator.state`` dicts of the caller's Generators, by name.
    The model's own Generators (dropout masks) are saved without being asked.
    ``base``: for a model with LoRA adapters on frozen weights, the checkpoint (file or run
    directory) those weights came from: only the adapters are saved, with the base's path
    and fingerprint.
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
    lora = lora_settings(model)
    if base is not None:
        if lora is None:
            raise ValueError("base: only the adapters of a model with LoRA adapters are saved "
                             "against a base checkpoint; this model has none")
        lora["base"] = _base_record(path, model, base)
        params = {name: value for name, value in params.items() if is_adapter(name)}
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
        "lora": lora,
        "frozen": frozen_parameters(model),
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
# a checkpoint of a model with adapters: {"rank", "alpha", "targets", "layers", "base": null or
# {"path", "relative", "fingerprint", "pretrained"}}; null (or absent, in older files) without adapters;
# "layers" is absent in files written before it was recorded (adapters on every target)
_LORA_FIELDS = {"rank": int, "alpha": (int, float), "targets": list}


def _check_meta(meta: dict, file: Path) -> None:
    for key, (kind, what) in _META_FIELDS.items():
        if key not in meta:
            raise CheckpointError(f"{file}: malformed checkpoint, the metadata has no {key!r}")
        if not isinstance(meta[key], kind) or isinstance(meta[key], bool):
            raise CheckpointError(f"{file}: malformed checkpoint, metadata {key!r} should be "
                                  f"{what}, got {meta[key]!r:.60}")
    _check_lora_meta(meta.get("lora"), file)
    _check_names("frozen", meta.get("frozen"), file)     # absent in files written before it was
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


def _check_lora_meta(lora, file: Path) -> None:
    if lora is None:
        return
    base = lora.get("base") if isinstance(lora, dict) else None
    if not (isinstance(lora, dict) and all(isinstance(lora.get(key), kind)
                                           for key, kind in _LORA_FIELDS.items())
            and (base is None or isinstance(base, dict) and all(isinstance(base.get(key), str)
                                                                for key in ("path", "fingerprint")))):
        raise CheckpointError(f"{file}: malformed checkpoint, metadata 'lora' should hold rank, "
                              f"alpha, targets and base, got {lora!r:.80}")
    _check_names("lora layers", lora.get("layers"), file)


def _check_names(key: str, names, file: Path) -> None:
    """A list of dotted names, or None (not recorded)."""
    if names is not None and not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
        raise CheckpointError(f"{file}: malformed checkpoint, metadata {key!r} should list dotted "
                              f"names, got {names!r:.60}")


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

    A checkpoint of a model with LoRA adapters gives the model with its adapters on the
    layers that had them; one saved with ``base=`` loads that base first (it must be where
    it was, or at the same place relative to this file, and hold the same weights). The
    rebuilt model has the saved model's parameters frozen; a ``model`` given keeps its own.

    ``info``: "config" (TransformerConfig), "model_class", "step", "lora" (the adapter
    settings, or None), "task", "tokenizer" (a text run's, read from the folder its task
    names beside the checkpoint file; None for other runs), "extra",
    "rng_states" (the caller's Generator states, by name), "optimizer" (the
    optimizer's ``state_dict()`` or None), "dtype", "path" (the file read).
    """
    meta, arrays, file = read_checkpoint(path, which)
    cls = MODEL_CLASSES[meta["model_class"]]
    try:
        config = TransformerConfig.from_dict(meta["config"])
    except (TypeError, ValueError, KeyError) as err:
        raise CheckpointError(f"{file}: the saved model config is invalid: {err}") from None
    lora = meta.get("lora")
    if model is None:
        model = cls(config, rng=np.random.default_rng(0), dtype=np.dtype(meta["dtype"]))
        if lora is not None:
            _add_saved_adapters(model, lora, file)
        if meta.get("frozen") is not None:
            _freeze_as_saved(model, meta["frozen"], file)
    else:
        if type(model) is not cls:
            raise CheckpointError(f"{file}: holds a {cls.__name__}, cannot load it into a "
                                  f"{type(model).__name__}")
        differences = _config_differences(config, model.config)
        if differences:
            raise CheckpointError(f"{file}: the checkpoint's config differs from the model's: "
                                  + "; ".join(differences))
    params = {name: arrays[f"params/{name}"] for name in meta["params"]}
    if lora is not None and lora.get("base") is not None:
        params = {**_base_state(lora["base"], file, meta["dtype"]), **params}
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
        "lora": lora,
        **{key: _join_arrays(meta.get(key), arrays, file)
           for key in ("task", "extra", "rng_states", "optimizer")},
        "path": file,
    }
    info["tokenizer"] = _saved_tokenizer(info["task"], file)
    return model, info


def _saved_tokenizer(task, file: Path):
    """The tokenizer a text run keeps beside its checkpoints, or None for a run without one."""
    if not (isinstance(task, dict) and isinstance(task.get("tokenizer_dir"), str)):
        return None
    directory = file.parent / task["tokenizer_dir"]
    try:
        return load_tokenizer(directory)
    except (FileNotFoundError, ValueError) as err:
        raise CheckpointError(f"{file}: a text run's checkpoint, whose tokenizer belongs in "
                              f"{directory}, which cannot be read ({err}); copy the run's "
                              f"{task['tokenizer_dir']}/ folder beside the checkpoint") from None
