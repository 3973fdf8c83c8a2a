"""The Module base class: parameters, gradients, children, and the forward/backward contract.

Every layer in tinytransformer is a Module. A Module

- computes its output in ``forward(*inputs)`` and keeps in ``self.cache`` exactly
  what ``backward`` needs;
- returns from ``backward(dout)`` the gradient with respect to each floating
  input (one array, or a tuple in input order) and *adds* the gradients of its
  own parameters into ``self.grads`` with ``self.add_grad(name, lambda: ...)``
  (accumulate, never overwrite, so a parameter used twice gets both
  contributions). The layer says *what* it adds; ``add_grad`` decides *when*:
  at once, or, inside a model's backward, on a second thread (``overlap.py``),
  finished before the model's ``backward`` returns; and it skips a frozen
  parameter (``self.frozen``) without computing anything;
- keeps its own parameters in ``self.params`` (name -> ndarray) and their
  gradients in ``self.grads`` (same keys, shapes and dtypes);
- finds its children among its attributes (a Module, or a list, tuple or dict
  of Modules), as in PyTorch, so ``named_parameters()`` can walk the whole tree.

In-place changes and the gradient worker, for whoever writes a layer. Inside a model's
backward the package computes parameter gradients on a second thread (``overlap.py``),
after the layer that asked for them has returned, from the arrays that layer was given
(its upstream gradient, its forward input). The package's own layers never change such
an array in place. A ``backward`` defined outside the package (your own Module
subclass) runs with that worker paused: what was handed to it is finished first, and
every parameter gradient below your layer is added at once. So your code may change
any array in place, ``dout += self.f.backward(dout); return dout`` included; the price
is that your layer's children do not overlap with the rest of the backward. What no
layer may do, with or without the worker: change in place an array it handed to a
forward before the backward that differentiates that forward (the layer kept it).
"""

from __future__ import annotations

import functools
from typing import Callable, Iterator, NamedTuple

import numpy as np

from .overlap import defer, worker_paused


def default_rng(rng: np.random.Generator | None) -> np.random.Generator:
    """The Generator a composite hands to every child: the one given, or a new one.

    Layers never touch NumPy's global random state. A composite built without a
    Generator gets ``np.random.default_rng()``, seeded once from the operating system
    (as PyTorch draws fresh weights): two composites built without one differ, and the
    children of one draw one after another from it, so they differ too. Pass a
    Generator (``np.random.default_rng(seed)``) for numbers you can reproduce.
    """
    if rng is None:
        return np.random.default_rng()
    return _check_rng(rng)


def require_rng(rng: np.random.Generator | None, layer: str) -> np.random.Generator:
    """The Generator a layer that draws numbers itself must be given (``layer`` names it).

    No hidden generator: a fixed-seed one would give every such layer built without a
    Generator the same numbers (three Linears, one weight), and a fresh one in every leaf
    would let a composite that forgets to hand its Generator down go unnoticed.
    """
    if rng is None:
        raise TypeError(f"rng: {layer} draws random numbers, so it needs a numpy.random.Generator "
                        f"(rng=np.random.default_rng(seed)), got None; a composite layer hands its "
                        f"own to its children")
    return _check_rng(rng)


def _check_rng(rng) -> np.random.Generator:
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng: expected a numpy.random.Generator (np.random.default_rng(seed)), "
                        f"got {type(rng).__name__}")
    return rng


def check_float_input(name: str, x, dtype=None, last_dim: int | None = None, min_ndim: int = 1,
                      dtype_of: str = "the layer's dtype") -> None:
    """Raise a clear error unless ``x`` is a float array (of ``dtype`` if given: ``dtype_of`` says
    whose dtype that is) with at least ``min_ndim`` axes, the last of size ``last_dim``."""
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name}: expected a numpy array, got {type(x).__name__}")
    if dtype is None and x.dtype.kind != "f":
        raise TypeError(f"{name}: expected a floating-point array, got dtype {x.dtype.name}")
    if dtype is not None and x.dtype != dtype:
        raise TypeError(f"{name}: expected dtype {np.dtype(dtype).name} ({dtype_of}), "
                        f"got {x.dtype.name}; cast the input or the model with .astype()")
    if x.ndim < min_ndim:
        raise ValueError(f"{name}: expected at least {min_ndim} dimensions, got shape {x.shape}")
    if last_dim is not None and x.shape[-1] != last_dim:
        raise ValueError(f"{name}: expected last dimension {last_dim}, got shape {x.shape}")


def check_upstream(name: str, dout, shape: tuple) -> None:
    """Raise a clear error unless the upstream gradient ``dout`` has the forward output's shape."""
    if not isinstance(dout, np.ndarray) or dout.shape != tuple(shape):
        got = f"shape {dout.shape}" if isinstance(dout, np.ndarray) else type(dout).__name__
        raise ValueError(f"{name}: expected the shape of the forward's output {tuple(shape)}, got {got}")


def _storage(a: np.ndarray) -> np.ndarray:
    """The array that owns ``a``'s memory (``a`` itself unless ``a`` is a view)."""
    while isinstance(a.base, np.ndarray):
        a = a.base
    return a


def _same_view(view: np.ndarray, owner: np.ndarray, new_owner: np.ndarray) -> np.ndarray:
    """The view of ``new_owner`` that ``view`` is of ``owner`` (same element offset and strides).

    ``new_owner`` is ``owner`` cast to another dtype with the same memory layout.
    """
    if view.dtype != owner.dtype or not (owner.flags.c_contiguous or owner.flags.f_contiguous):
        raise TypeError("astype: cannot keep a view tied across the cast (the view reinterprets "
                        "its owner's dtype, or the owner is not contiguous)")
    old, new = owner.itemsize, new_owner.itemsize
    offset = view.__array_interface__["data"][0] - owner.__array_interface__["data"][0]
    return np.ndarray(view.shape, new_owner.dtype, buffer=new_owner, offset=offset // old * new,
                      strides=tuple(s // old * new for s in view.strides))


class ChildCaches(NamedTuple):
    """The cache of a composite whose backward needs nothing of its own: its children keep theirs."""


class InvalidatedByInference(NamedTuple):
    """The cache after an inference call (``encode``, ``decode``, ``decode_step``): the layers'
    caches no longer belong to one forward, so there is nothing to differentiate."""
    by: str


class UsedByBackward(NamedTuple):
    """A model's cache once its backward has run: what the forward kept is used up (every
    gradient was added), so a second backward, which would add them all again, is refused.
    After a forward split over the cores, ``split`` keeps the BatchSplit (its replicas' attention maps)."""
    split: object = None


# what every Module keeps of its own (set in Module.__init__): never a child, so the tree
# walk skips it instead of looking through every array (a walk of the reference model:
# 0.3 ms, against 1.0 ms looking through them)
OWN_STATE = frozenset({"params", "grads", "buffers", "frozen", "training", "cache"})


PACKAGE = __name__.split(".")[0]     # the package whose layers may run gradients on the worker


def _with_worker_paused(backward: Callable) -> Callable:
    """``backward`` run inside ``worker_paused()``: for a backward defined outside the package."""
    @functools.wraps(backward)
    def paused_backward(self, *args, **kwargs):
        with worker_paused():
            return backward(self, *args, **kwargs)
    return paused_backward


class Module:
    """Base class of every layer. Subclasses call ``super().__init__()`` first."""

    def __init_subclass__(cls, **kwargs):
        # a backward written outside the package may change arrays in place after a child's
        # backward returns, while the worker still reads them: it runs with the worker paused
        super().__init_subclass__(**kwargs)
        if "backward" in vars(cls) and cls.__module__.split(".")[0] != PACKAGE:
            cls.backward = _with_worker_paused(vars(cls)["backward"])

    def __init__(self) -> None:
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self.buffers: dict[str, np.ndarray] = {}   # fixed arrays (no gradient), cast by astype
        self.frozen: set[str] = set()              # parameters whose gradient is not computed
        self.training = True
        self.cache = None                          # what forward kept for backward (a NamedTuple)

    # ---- the forward/backward contract ------------------------------------------------

    def __call__(self, *inputs, **kwargs):
        return self.forward(*inputs, **kwargs)

    def forward(self, *inputs, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} does not define forward")

    def backward(self, dout):
        raise NotImplementedError(f"{type(self).__name__} does not define backward")

    def _saved(self):
        """What forward cached; a clear RuntimeError if forward has not run."""
        if self.cache is None:
            raise RuntimeError(f"{type(self).__name__}.backward() called before forward(): "
                               f"there is no cached input to differentiate; run forward first")
        if isinstance(self.cache, InvalidatedByInference):
            raise RuntimeError(f"{type(self).__name__}.backward(): the caches were invalidated by "
                               f"inference ({self.cache.by}) after the last forward; run forward "
                               f"again before backward")
        if isinstance(self.cache, UsedByBackward):
            raise RuntimeError(f"{type(self).__name__}.backward() called a second time after one "
                               f"forward: the first used up what the forward kept and added every "
                               f"gradient; run forward again before another backward")
        return self.cache

    def add_grad(self, name: str, gradient: Callable[[], np.ndarray], at=...) -> None:
        """``self.grads[name][at] += gradient()``: now, or on the gradient worker inside a
        model's backward (``overlap.py``); not at all for a frozen parameter.

        ``gradient`` is a function (usually a lambda) so that the product itself can run
        later, on the worker; the package's own layers run it there, and leave the arrays
        it reads unchanged until it has (a backward defined outside the package runs it at
        once: see the module's docstring).
        """
        if name in self.frozen:
            return
        grad = self.grads[name]

        def accumulate():
            grad[at] += gradient()

        defer(accumulate)

    def add_param(self, name: str, value: np.ndarray) -> np.ndarray:
        """Register a parameter and a zero gradient buffer of the same shape and dtype.

        ``np.zeros`` rather than ``np.zeros_like``: its memory comes from the operating system
        already zero and is touched only when a gradient is written (a model that only
        generates never touches it); ``zeros_like`` writes every zero (0.5 s for GPT-2 small).
        """
        self.params[name] = value
        self.grads[name] = np.zeros(value.shape, value.dtype)
        return value

    # ---- the tree ---------------------------------------------------------------------

    def named_children(self) -> Iterator[tuple[str, "Module"]]:
        """Child modules in attribute order; a list (or tuple) of modules yields ``name.0``,
        ``name.1``, ..., a dict of modules ``name.<key>``. A container mixing modules with
        anything else is refused: its modules would silently go untrained."""
        for name, value in vars(self).items():
            if name in OWN_STATE:
                continue
            if isinstance(value, Module):
                yield name, value
            elif isinstance(value, (list, tuple, dict)):
                items = list(value.items() if isinstance(value, dict) else enumerate(value))
                modules = [isinstance(v, Module) for _, v in items]
                if any(modules) and not all(modules):
                    raise TypeError(f"{type(self).__name__}.{name}: a {type(value).__name__} that mixes "
                                    f"Modules with other values; keep child modules in a container "
                                    f"of their own")
                for key, child in (items if any(modules) else []):
                    if "." in str(key):
                        raise TypeError(f"{type(self).__name__}.{name}: a key of a dict of modules "
                                        f"must not contain a dot (it separates names), got {key!r}")
                    yield f"{name}.{key}", child

    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, "Module"]]:
        """This module and every descendant, depth first, with dotted names."""
        yield prefix, self
        for name, child in self.named_children():
            yield from child.named_modules(f"{prefix}.{name}" if prefix else name)

    def owned_parameters(self) -> Iterator[tuple[str, "Module", str]]:
        """``(dotted_name, owner, key)``: each parameter of the tree is ``owner.params[key]``.

        An array shared by several modules (tied weights, also when one module
        holds a view of it such as its transpose) is yielded once, under the
        first name met in attribute order. Its holders must agree on whether it is
        frozen (one array has one gradient): a clear error if they do not.
        """
        first: dict[int, tuple[str, Module, str]] = {}       # storage -> where it was first met
        for prefix, module in self.named_modules():
            for key, param in module.params.items():
                name = f"{prefix}.{key}" if prefix else key
                owner = first.setdefault(id(_storage(param)), (name, module, key))
                if owner[1] is module and owner[2] == key:
                    yield name, module, key
                elif (owner[2] in owner[1].frozen) != (key in module.frozen):
                    frozen, trains = (owner[0], name) if owner[2] in owner[1].frozen else (name, owner[0])
                    raise ValueError(f"'{frozen}' is frozen but '{trains}', the same array (tied), is "
                                     f"not: its share of the gradient would be dropped. Freeze (or "
                                     f"unfreeze) every module that holds it")

    def named_parameters(self) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
        """``(dotted_name, param, grad)`` for the whole tree, tied parameters once."""
        for name, module, key in self.owned_parameters():
            yield name, module.params[key], module.grads[key]

    def trainable_parameters(self) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
        """``(dotted_name, param, grad)`` of the parameters that are not frozen, in the same order."""
        for name, module, key in self.owned_parameters():
            if key not in module.frozen:
                yield name, module.params[key], module.grads[key]

    def requires_grad_(self, requires_grad: bool = True) -> "Module":
        """Freeze (False) or unfreeze (True) every parameter of this module and below; return self.

        A frozen parameter keeps a zero gradient: ``add_grad`` skips it without computing
        anything, a model's backward skips a branch that is frozen all through, and
        optimizers and gradient clipping leave it alone. An array held by several modules
        (tied weights) is frozen in all of them or in none: walking a tree where only some
        holders freeze it raises (``owned_parameters``).
        """
        if not isinstance(requires_grad, bool):
            raise TypeError(f"requires_grad: expected True or False, got {requires_grad!r}")
        for _, module in self.named_modules():
            module.frozen = set() if requires_grad else set(module.params)
        return self

    def has_trainable_parameters(self) -> bool:
        return next(self.trainable_parameters(), None) is not None

    def parameters(self) -> list[np.ndarray]:
        return [p for _, p, _ in self.named_parameters()]

    def num_parameters(self, trainable_only: bool = False) -> int:
        """How many numbers the parameters hold (of the trainable ones only, if asked)."""
        named = self.trainable_parameters() if trainable_only else self.named_parameters()
        return sum(p.size for _, p, _ in named)

    def zero_grad(self) -> None:
        """Set every gradient buffer to zero, in place (tied views stay tied)."""
        for _, _, grad in self.named_parameters():
            grad.fill(0)

    def train(self, mode: bool = True) -> "Module":
        for _, module in self.named_modules():
            module.training = mode
        return self

    def eval(self) -> "Module":
        return self.train(False)

    # ---- saving and casting -----------------------------------------------------------

    def state_dict(self) -> dict[str, np.ndarray]:
        """A copy of every parameter, by dotted name (tied parameters once)."""
        return {name: param.copy() for name, param, _ in self.named_parameters()}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Copy ``state`` into the parameters in place. Strict: names and shapes must match."""
        own = {name: param for name, param, _ in self.named_parameters()}
        missing = sorted(set(own) - set(state))
        extra = sorted(set(state) - set(own))
        if missing or extra:
            def names(keys: list[str]) -> str:
                return "nothing" if not keys else \
                    ", ".join(keys[:4]) + (f" and {len(keys) - 4} more" if len(keys) > 4 else "")
            raise KeyError(f"load_state_dict: state does not match the model: missing {names(missing)}; "
                           f"unexpected {names(extra)}")
        for name, param in own.items():
            value = np.asarray(state[name])
            if value.shape != param.shape:
                raise ValueError(f"load_state_dict: '{name}' has shape {value.shape} in the state "
                                 f"but {param.shape} in the model")
            param[...] = value     # in place: tied views and optimizer references stay valid

    def astype(self, dtype) -> "Module":
        """Cast every parameter, gradient and buffer of the tree in place; return self.

        Arrays shared by several modules are cast once and stay shared. Caches
        are dropped (they hold arrays of the old dtype).
        """
        cast: dict[int, np.ndarray] = {}

        def convert(a: np.ndarray) -> np.ndarray:
            if id(a) not in cast:
                owner = _storage(a)
                # a view (such as a tied weight's transpose) becomes the same view of the
                # cast owner; casting it alone would copy it and untie it
                cast[id(a)] = a.astype(dtype) if owner is a else _same_view(a, owner, convert(owner))
            return cast[id(a)]

        for _, module in self.named_modules():
            for store in (module.params, module.grads, module.buffers):
                for name in store:
                    store[name] = convert(store[name])
            module.cache = None
            module.recompute_tables()
        return self

    def recompute_tables(self) -> None:
        """Compute again, in the buffers' new dtype, any fixed table made from constants
        (sinusoidal positions): ``astype`` calls it after casting, so a float64 model holds
        float64 values, not widened float32 ones. Nothing to do by default."""

    @property
    def dtype(self) -> np.dtype | None:
        """The dtype of the first parameter or buffer, or None for a module without any."""
        for _, module in self.named_modules():
            for store in (module.params, module.buffers):
                for value in store.values():
                    return value.dtype
        return None

    # ---- printing ---------------------------------------------------------------------

    def extra_repr(self) -> str:
        """Constructor arguments worth printing; subclasses override."""
        return ""

    def summary(self) -> str:
        """The module tree with each parameter's shape and the parameter counts."""
        lines = []
        for prefix, module in self.named_modules():
            depth = prefix.count(".") + (1 if prefix else 0)
            indent = "  " * depth
            label = prefix.rsplit(".", 1)[-1] if prefix else ""
            head = f"{label}: " if label else ""
            own = sum(p.size for p in module.params.values())
            lines.append(f"{indent}{head}{type(module).__name__}({module.extra_repr()})"
                         + (f"  [{own:,} params]" if own else ""))
            for name, p in module.params.items():
                lines.append(f"{indent}    {name}: {tuple(p.shape)} {p.dtype.name}")
        lines.append(f"Total parameters: {self.num_parameters():,}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self.summary()
