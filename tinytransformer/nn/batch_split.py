"""A large training step's batch split over the cores: the first part through the model, each
other through a replica of it, each on a thread of its own.

NumPy runs a matrix product on as many threads as BLAS has, but every other operation (the
softmax's exp, GELU's tanh, LayerNorm's sums) on the one thread that calls it. Two Python
threads each running a model on half of the batch keep both cores busy through all of it:
NumPy releases the GIL inside its array loops and products. The text model's training step
(batch 32 of 128 characters, 4 layers of d_model 128) took 351 ms this way against 504 ms
with the products shared and 532 ms with the gradient worker; the reference model's at
length 128, 356 ms against 481 and 500 (idle 2-core AMD EPYC, NumPy 2.4,
benchmarks/results/sharing.md).

The model itself computes the first part; each other part goes through a replica: the model's
tree with the very same parameter arrays and buffers (an update by the optimizer is seen at
once), and its own caches and zero gradient buffers, made afresh at every split forward (so it
follows every change to the model: LoRA, freezing, a cast):

    forward:   part 0 of every batch array -> the model, on this thread;
               part i -> replica i, on thread i;                 the outputs joined
    backward:  part 0 of dout -> the model (its gradients added as in any backward);
               part i -> replica i, on thread i;  then each replica's gradients are added
               into the model's, replica after replica

Every part runs with one BLAS thread and no gradient worker. The additions come in a fixed
order, so the same thread count gives the same numbers; a different count rounds differently
in float32 (in float64 a split step equals the whole batch's to 1e-12, tests/test_batch_split.py).
When a model splits is ``threads.split_count``'s decision (a large call of a model with few
enough weights) and this file's (training mode, no dropout drawing masks: n threads drawing
from one Generator would draw in no fixed order, and every array argument batch first).
"""

from __future__ import annotations

import copy
import functools
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, NamedTuple

import numpy as np

from .. import threads
from .dropout import Dropout
from .module import Module, UsedByBackward, check_upstream

_pool: ThreadPoolExecutor | None = None      # the threads of parts 1, 2, ...: made on first use


def replica(model: Module) -> Module:
    """A copy of ``model``'s tree computing with the same parameters and buffers (the arrays
    themselves, not copies), with zero gradient buffers and no caches of its own.

    Any other array a module holds (the attention weights of its last forward, kept for
    plotting) is shared rather than copied: a forward replaces such an array, never writes
    into it, and copying the last step's attention weights cost more than the split gained.
    """
    memo = {}
    for _, module in model.named_modules():
        memo[id(module.cache)] = None
        arrays = [v for v in vars(module).values() if isinstance(v, np.ndarray)]
        for array in (*module.params.values(), *module.buffers.values(), *arrays):
            memo[id(array)] = array
        for grad in module.grads.values():
            memo.setdefault(id(grad), np.zeros(grad.shape, grad.dtype))   # a tie stays one buffer
        if isinstance(getattr(module, "rng", None), np.random.Generator):
            memo[id(module.rng)] = module.rng
    return copy.deepcopy(model, memo)


def add_gradients(model: Module, replica_of_model: Module) -> None:
    """model's gradients += the replica's, buffer by buffer (a buffer shared by two modules, as
    tied embeddings are, once); frozen parameters have none."""
    added = set()
    for (_, ours), (_, theirs) in zip(model.named_modules(), replica_of_model.named_modules()):
        for name, grad in theirs.grads.items():
            if name not in ours.frozen and id(grad) not in added:
                added.add(id(grad))
                ours.grads[name] += grad


def parts_of(batch: int, n: int) -> list[slice]:
    """n consecutive slices of range(batch), as equal as they can be."""
    edges = np.linspace(0, batch, n + 1).round().astype(int)
    return [slice(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


def _part(value, rows: slice):
    return value[rows] if isinstance(value, np.ndarray) else value


def on_threads(jobs: list[Callable]) -> list:
    """Every job's result, job 0 run on this thread and the others on the pool, each with one
    thread for BLAS and no gradient worker, and with this thread's NumPy error settings."""
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=threads.CORES - 1, thread_name_prefix="tinytransformer-part")
    errors = np.geterr()

    def alone(job):
        with threads.threads(1), np.errstate(**errors):
            return job()

    later = [_pool.submit(alone, job) for job in jobs[1:]]
    first = alone(jobs[0])
    return [first] + [future.result() for future in later]


class BatchSplit(NamedTuple):
    """A model's cache after a split forward: the cache of its own forward over the first part,
    the replicas that computed the others, the parts of the batch, and the shape of the joined
    output (what backward's upstream gradient must be)."""
    own: object
    replicas: list
    parts: list
    shape: tuple


def splits_batch(forward: Callable) -> Callable:
    """Decorator of a model's forward whose arrays (ids, masks; None stays None) have the batch on
    their first axis: the forward over parts of the batch, the first on the model and the others
    on replicas, joined, when
    ``threads.split_count`` says so (training mode, no dropout); then ``model.cache`` is the
    BatchSplit, and the model's layers hold the first part's caches. The size of the call is the
    first array's tokens."""
    @functools.wraps(forward)
    def whole_or_split(model, *args, **kwargs):
        arrays = [a for a in (*args, *kwargs.values()) if isinstance(a, np.ndarray)]
        batch = arrays[0].shape[0] if arrays and arrays[0].ndim else 0
        n = threads.split_count(arrays[0].size * model.multiply_adds_per_token if batch else 0,
                                model.multiply_adds_per_token, batch)
        if (n < 2 or not model.training or any(a.ndim == 0 or a.shape[0] != batch for a in arrays)
                or any(isinstance(m, Dropout) and m.p > 0 for _, m in model.named_modules())):
            return forward(model, *args, **kwargs)
        parts = parts_of(batch, n)
        model.cache = None             # the last split's replicas and their activations go first
        runners = [model] + [replica(model) for _ in parts[1:]]
        outs = on_threads([functools.partial(forward, m, *(_part(a, rows) for a in args),
                                             **{k: _part(v, rows) for k, v in kwargs.items()})
                           for m, rows in zip(runners, parts)])
        out = np.concatenate(outs)
        model.cache = BatchSplit(model.cache, runners[1:], parts, out.shape)
        return out
    return whole_or_split


def joins_gradients(backward: Callable) -> Callable:
    """Decorator of a model's backward: after a split forward, the model's own backward on the
    first part of the upstream gradient and each replica's on its part, then the replicas'
    gradients added into the model's."""
    @functools.wraps(backward)
    def whole_or_split(model, dout):
        split = model.cache
        if not isinstance(split, BatchSplit):
            return backward(model, dout)
        check_upstream("dlogits", dout, split.shape)
        model.cache = split.own                 # what the model's backward of the first part uses up
        try:
            on_threads([functools.partial(backward, m, dout[rows])
                        for m, rows in zip([model, *split.replicas], split.parts)])
        finally:
            model.cache = UsedByBackward(split)     # a second backward is refused; the maps stay
        for r in split.replicas:
            add_gradients(model, r)
    return whole_or_split
