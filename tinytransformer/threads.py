"""How many threads tinytransformer computes with, held where it computes, whatever the import order.

NumPy's BLAS (OpenBLAS, MKL, Accelerate) starts one thread per core. The matrices
of the toy models are small, so a second BLAS thread gains little on an idle machine
and, on a busy one, makes every small product wait for a free core: a reference
training step measured 37 ms with one BLAS thread and 290 ms with two on a loaded
2-core machine. So wherever the package computes (a model's forward, backward and
decoding steps, ``gradcheck``, the training loop, evaluation) it holds BLAS to one
thread with threadpoolctl, and gives the count it found back when the last call
leaves. Nothing process-wide changes: no environment variable, nothing left set
after the call, and it works whether NumPy was imported first (as in a notebook) or not.

What ``n`` controls: with ``n >= 2`` a model's backward computes its weight gradients on
a second thread (the gradient worker, ``nn/overlap.py``) while BLAS stays on one; the
results are bit-identical to one thread. A large model call goes another way: a training
call of ``SPLIT_FROM`` multiply-adds or more (the text model's step) by a model below
``SPLIT_UNDER_WEIGHTS`` weights splits its batch into n parts, the first run by the model,
each other by a replica of it, each on a thread of its own (``split_count``,
``nn/batch_split.py``); any other call of ``SHARE_FROM`` multiply-adds or more (GPT-2
small's step), and every call of a model with
``SHARE_WEIGHTS_FROM`` weights or more (GPT-2's, decoding steps included), puts its products
on n BLAS threads inside ``products_shared`` while the worker stands down, as two BLAS
threads beside it would only take turns with it. ``threads(8)`` on a 2-core machine
computes as ``threads(2)``.

Your own loop needs nothing: the model's methods hold the threads themselves.
To choose the number, or to hold it around code of your own:

    with tinytransformer.threads(1):         # one thread in all: no worker
        for step in range(100):
            ...

A block inside another keeps the outer block's choice unless it names a number.
BLAS's thread count belongs to the process, not to a Python thread: while any
thread is inside a block BLAS is held to one thread (except while a large call shares
its products, which raises it for the process: another Python thread computing at that
moment shares them too), and the count found when the first block opened is put back
when the last one closes (two Python threads that
each saved and restored it themselves could leave it at one). One exception we cannot
mend from here: OpenBLAS 0.3.30 (NumPy 2.4's) ignores a count set on another thread
once the main thread has set one, so when the main thread opened the first block and
another thread closes the last, BLAS stays at one thread (measured). Entering the hold
costs ~10 us (threadpoolctl's ``threadpool_limits()`` rescans the loaded libraries at
every call, ~0.9 ms measured; a ``ThreadpoolController`` made once does not).
"""

from __future__ import annotations

import functools
import os
import threading
import time
from contextlib import contextmanager
from typing import Iterator

from threadpoolctl import ThreadpoolController

__all__ = ["threads", "CORES", "holds_threads", "worker_allowed", "products_shared", "split_count",
           "SHARE_FROM", "SHARE_WEIGHTS_FROM", "SPLIT_FROM", "SPLIT_UNDER_WEIGHTS"]

CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
DEFAULT = min(2, CORES)          # one BLAS thread, and the gradient worker if there is a second core

_local = threading.local()       # .n: the thread count of the block open on this thread, else None
                                 # .shared: True inside products_shared() with BLAS on .n threads
_controller: ThreadpoolController | None = None
_hold_lock = threading.Lock()    # guards the two below, shared by every Python thread
_holders = 0                     # outermost blocks open now, over all Python threads
_held = None                     # the BLAS limit the first of them set, and the counts it found


def _blas() -> ThreadpoolController:
    # made on first use, once NumPy and SciPy have loaded their BLAS libraries
    global _controller
    if _controller is None:
        _controller = ThreadpoolController()
    return _controller


@contextmanager
def _blas_on_one_thread() -> Iterator[None]:
    """BLAS on one thread inside the block, for the whole process; the first block to open
    saves the count, the last to close restores it."""
    global _holders, _held
    with _hold_lock:
        if _holders == 0:
            found = _blas_counts()
            _held = _blas().limit(limits=1, user_api="blas"), found
        _holders += 1
    try:
        yield
    finally:
        with _hold_lock:
            _holders -= 1
            if _holders == 0:
                _restore(*_held)
                _held = None


def _blas_counts() -> list[int]:
    return [lib.num_threads for lib in _blas().lib_controllers if lib.user_api == "blas"]


def _restore(held, found: list[int]) -> None:
    """Put back the counts ``found`` before ``held`` limited them, asking again until BLAS
    reports them (for at most 50 ms). OpenBLAS 0.3.30 (NumPy 2.4's) ignored a count set
    from another thread than the one that had set the last for a few milliseconds after,
    then took it (measured); on one thread the first ask is enough."""
    deadline = time.perf_counter() + 0.05
    held.restore_original_limits()
    while _blas_counts() != found and time.perf_counter() < deadline:
        time.sleep(0.001)
        held.restore_original_limits()


@contextmanager
def threads(n: int | None = None) -> Iterator[None]:
    """Compute with ``n`` threads inside the block (default: 2, or 1 on a single core).

    BLAS runs on one thread and, with ``n >= 2``, the parameter gradients of a model's
    backward go to a second one (``nn/overlap.py``); a large model call splits its batch over
    n threads (``split_count``) or puts its products on n BLAS threads (``products_shared``)
    instead. When the last block open in the process closes, BLAS gets back the thread count it had.
    """
    outer = getattr(_local, "n", None)
    if n is None and outer is not None:
        yield                                 # inside a block already: keep its choice
        return
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ValueError(f"threads: expected an integer >= 1, got {n!r}")
    _local.n = DEFAULT if n is None else n
    try:
        if outer is None:
            with _blas_on_one_thread():
                yield
        else:
            yield
    finally:
        _local.n = outer


def holds_threads(method):
    """Decorator: run ``method`` inside ``threads()`` (a no-op inside an open block)."""
    @functools.wraps(method)
    def held(*args, **kwargs):
        with threads():
            return method(*args, **kwargs)
    return held


def worker_allowed() -> bool:
    """True inside a ``threads(n)`` block with n >= 2, products not shared: the gradient worker may run."""
    n = getattr(_local, "n", None)
    return n is not None and n >= 2 and not getattr(_local, "shared", False)


# From this many multiply-adds in one call of a model (its tokens times its multiply-adds per
# token, a model's ``multiply_adds_per_token``), a call that is not split (``SPLIT_FROM``) is
# large enough for its products to be shared: BLAS gets every thread of the block and the
# gradient worker stands down. Measured on an idle 2-core AMD EPYC
# (benchmarks/results/sharing.md, and its run at 80aa5a5), against the worker: sharing 0.79x to
# 0.95x the time for the text model's 3.3 G, 0.82x to 0.99x at GPT-2 small's 127 G, 0.94x to
# 1.00x at the reference step's 0.2 G. Below it the worker stays, and a busy 2-core machine
# makes small products on two BLAS threads several times slower besides (docs/performance.md).
SHARE_FROM = 1e9
# A model with this many weights in its products or more (its multiply-adds per token; 120 MB
# of float32) shares even one token's call: decoding a token reads every weight once, and two
# cores read memory faster than one (GPT-2 small, 124 M weights, greedy at batch 1, measured
# once on the idle AMD EPYC: 34.4 tokens/s shared against 24.8).
SHARE_WEIGHTS_FROM = 3e7
# From this many multiply-adds, a training call of a model with fewer than
# ``SPLIT_UNDER_WEIGHTS`` weights splits its batch over the threads (``split_count``). Measured on
# the idle AMD EPYC (benchmarks/results/sharing.md), split against the worker: 1.15x the time at
# the reference step (0.2 G), 0.97x for the reference model at length 32 (0.42 G) and 1.06x at
# length 48 (0.62 G) (1.13x and 1.00x in a run at 7f2b51a), 0.80x at length 64 (0.82 G), 0.87x at
# d_model 128 (0.86 G), 0.66x at the text model's step (3.3 G). Below it the two threads' turns
# at the interpreter cost about what the split gains.
SPLIT_FROM = 7e8
# A large training call of a model with fewer weights than this (in its products) splits its
# batch over the threads instead of sharing its products (``split_count``); every part but the
# first keeps a gradient buffer of every weight. Measured on the idle AMD EPYC
# (benchmarks/results/sharing.md), split against shared: 0.70x the time at the text model's step
# (0.8 M weights), 0.95x at d_model 256 (3.2 M), 0.98x at d_model 512 (12.6 M), where products
# are most of the step (with two replicas instead of one, the split was 1.10x there). GPT-2
# small (124 M) shares.
SPLIT_UNDER_WEIGHTS = 2e7


@contextmanager
def products_shared(multiply_adds: float, weights: float = 0.0) -> Iterator[None]:
    """Inside a ``threads(n)`` block with n >= 2 on a machine of 2 cores or more, for work of at
    least ``SHARE_FROM`` multiply-adds or products of at least ``SHARE_WEIGHTS_FROM`` weights:
    BLAS on n threads (at most one per core) for the block, and no gradient worker. Otherwise
    nothing changes.

    Small products gain least from a second BLAS thread and, on a busy machine, lose most
    (each waits for a free core); there the second core is safer spent on the parameter
    gradients. A GPT-2-small step is the other way round: its products are big enough to
    split, and a worker beside two BLAS threads would only take turns with them. The count is
    set from this thread and, on leaving, put back to what it was on entering (the hold's
    one thread, unless another Python thread was sharing at the same time)."""
    n = min(getattr(_local, "n", None) or 1, CORES)
    large = multiply_adds >= SHARE_FROM or weights >= SHARE_WEIGHTS_FROM
    if n < 2 or getattr(_local, "shared", False) or not large:
        yield
        return
    with _hold_lock:
        limited = _blas().limit(limits=n, user_api="blas")
    _local.shared = True
    try:
        yield
    finally:
        _local.shared = False
        with _hold_lock:
            limited.restore_original_limits()


def split_count(multiply_adds: float, weights: float, batch: int) -> int:
    """Into how many parts a model's training call splits its batch (``nn/batch_split.py``): the
    block's n threads (at most one per core and one per sequence) for a call of ``SPLIT_FROM``
    multiply-adds or more by a model of fewer than ``SPLIT_UNDER_WEIGHTS`` weights; otherwise 1.

    Split, each part has a core for all of its work, not only for its products (as when they
    are shared): the attention's (B, H, T, T) passes, GELU, LayerNorm. The more of a step is
    products, the less that gains, and every part but the first keeps a gradient buffer of
    every weight."""
    n = min(getattr(_local, "n", None) or 1, CORES, batch)
    if n < 2 or getattr(_local, "shared", False) or multiply_adds < SPLIT_FROM or weights >= SPLIT_UNDER_WEIGHTS:
        return 1
    return n
