"""Parameter gradients on the second core, overlapped with the rest of the backward pass.

Backward through a layer gives two kinds of gradient. The gradient of its input is
needed at once: the layer below is waiting for it. The gradients of its parameters
are needed only at the optimizer step. So a layer's backward hands the second kind
to ``defer``:

    def add_param_grads():
        self.grads["weight"] += x2.T @ dy2
    defer(add_param_grads)
    return dy2 @ W.T                      # the input gradient, computed right away

Outside ``overlap_param_grads()`` (a layer on its own, a layer's gradient check), with
one thread (``tinytransformer.threads(1)``, or a single core), or with
``tinytransformer.nn.overlap.enabled = False``, ``defer(job)`` simply runs ``job()``.
Inside it, the job goes to one worker thread and backward goes on: the weight
gradients of every Linear (half of the backward's arithmetic) are computed on the
second core while the main thread works its way down the network. NumPy releases
the GIL inside its matrix products and array loops, so the two threads really run at
the same time: for the reference model the backward pass takes ~15 ms instead of
~20 ms on a 2-core machine (benchmarks/). The models' ``backward`` runs inside the
context, which on leaving waits for every deferred job, so when ``model.backward``
returns every gradient is complete (the whole-model gradient checks go through the
worker, so they check this path too).

The same numbers, bit for bit: one worker runs the jobs in the order they were
deferred, so every gradient buffer gets the same additions in the same order as
without the worker. That holds for tied buffers too (the output projection and the
embedding add into one): every write into a parameter gradient inside a model's
backward goes through ``defer``.

A deferred job reads arrays after ``defer`` returns, so those arrays (a layer's
saved forward input, its upstream gradient) must not be changed in place before
the context ends. No backward in this package writes into its upstream gradient,
nor into the gradient it returns (LearnedPositionalEmbedding returns the very ``dy``
its job reads): whatever receives a gradient computes a new array from it. A layer
written outside the package promises nothing of the kind (``dout += f.backward(dout)``
is natural NumPy), so its backward runs inside ``worker_paused()`` (``Module``
arranges it): the jobs queued before it finish first, and the jobs of its children run
at once. Pausing costs the package's own layers nothing. Copying what the jobs read
instead (even the upstream gradients alone) made the reference model's backward 14.4 ->
20.1 ms (median, 2-core AMD EPYC, a loaded machine): the copies are fresh memory, ~15 MB a
step, that the operating system must hand out again at every step.
NumPy's error settings (``np.errstate``) belong to a thread; the worker takes those
of the thread that opens the context.
"""

from __future__ import annotations

import os
import queue
import threading
from contextlib import contextmanager
from typing import Callable, Iterator

import numpy as np

from ..threads import worker_allowed

# False: every deferred job runs at once, on the calling thread. Even when True, the worker
# runs only inside a ``threads(n)`` block with n >= 2 (a model's methods open one: two threads
# by default, one on a single core, where the worker could only take turns with the main thread).
enabled = True

_state = threading.local()      # .errors: the error list of this thread's open context, else None
_jobs: queue.SimpleQueue | None = None      # (job, errors) pairs for the worker, in order
_jobs_pid: int | None = None                # a forked child starts a worker of its own
_start_lock = threading.Lock()              # one worker, even if two threads start at once


def _work(jobs: queue.SimpleQueue) -> None:
    """The worker thread: run each job in turn; an error goes to its context's list."""
    while True:
        job, errors = jobs.get()
        try:
            job()
        except BaseException as error:     # raised again when the context ends
            errors.append(error)


def _queue() -> queue.SimpleQueue:
    # a SimpleQueue and a bare thread rather than concurrent.futures: a put costs ~0.1 us
    # on the main thread, a submit ~20 us (measured), and a step defers ~50 jobs
    global _jobs, _jobs_pid
    with _start_lock:
        if _jobs is None or _jobs_pid != os.getpid():
            _jobs, _jobs_pid = queue.SimpleQueue(), os.getpid()
            threading.Thread(target=_work, args=(_jobs,), name="tinytransformer-grads",
                             daemon=True).start()
        return _jobs


def defer(job: Callable[[], None]) -> None:
    """Run ``job()`` (parameter-gradient work) now, or on the worker inside ``overlap_param_grads()``."""
    errors = getattr(_state, "errors", None)
    if errors is None:
        job()
    else:
        _queue().put((job, errors))


def _wait_for_worker(errors: list) -> None:
    """Return once the worker has run every job queued so far.

    A Ctrl-C while waiting is held back until then, so that no job writes into a
    gradient after the context has ended (the next zero_grad would race with it).
    """
    finished = threading.Event()
    _queue().put((finished.set, errors))         # runs after every job queued before it
    interrupted = None
    while not finished.is_set():
        try:
            finished.wait()
        except BaseException as error:
            interrupted = error
    if interrupted is not None:
        raise interrupted


@contextmanager
def worker_paused() -> Iterator[None]:
    """Within this block ``defer`` runs every job at once, on this thread, once the worker has
    finished the jobs handed to it before (so the additions keep their order and never run on
    two threads at once). Outside ``overlap_param_grads()`` it changes nothing."""
    errors = getattr(_state, "errors", None)
    if errors is None:
        yield
        return
    _wait_for_worker(errors)
    _state.errors = None
    try:
        yield
    finally:
        _state.errors = errors


@contextmanager
def overlap_param_grads() -> Iterator[None]:
    """Within this block ``defer`` hands jobs to the worker; leaving it waits for all of them.

    A job's error is raised here, on leaving; an error inside the block still waits for
    the jobs already handed over (so none writes a gradient later) and then propagates.
    A block inside another waits on leaving too, so a model's ``backward`` returns
    complete gradients wherever it is called.
    """
    if not (enabled and worker_allowed()):
        with worker_paused():      # an outer block's worker may hold jobs: they finish first, ours run here
            yield
        return
    outer = getattr(_state, "errors", None)
    errors = [] if outer is None else outer
    if outer is None:
        _state.errors = errors
        settings = np.geterr()                   # the worker computes under this thread's errstate
        _queue().put((lambda: np.seterr(**settings), errors))
    try:
        yield
    finally:
        if outer is None:
            _state.errors = None
        _wait_for_worker(errors)
    if errors:                                   # reached only if the block succeeded
        error = errors[0]
        errors.clear()
        raise error
