"""What a person watches during training, and what Ctrl-C does.

``Progress`` prints the progress line; ``StopRequest`` turns the first Ctrl-C
into a request to stop cleanly after the current step (the trainer then saves
a checkpoint to resume from).
"""

from __future__ import annotations

import signal
import threading
import time
from contextlib import contextmanager


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    h, m, s = seconds // 3600, seconds // 60 % 60, seconds % 60
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Progress:
    """The progress line: step, loss, lr, gradient norm, tokens/s, elapsed, ETA.

    On a terminal one line is rewritten in place (``\\r``), at most 5 times a
    second; elsewhere (a log file, a notebook, a pipe) a line is printed every
    ``every`` steps. Tokens are target tokens, the ones the loss counts. The ETA
    runs to the step budget, so it is an upper bound when the run stops early.
    """

    def __init__(self, stream, total_steps: int, every: int, first_step: int, elapsed: float):
        self.stream, self.total, self.every = stream, total_steps, every
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self.start_time, self.start_step, self.elapsed_before = time.perf_counter(), first_step, elapsed
        self.window_tokens, self.window_seconds, self.last_draw = 0, 0.0, 0.0
        self.on_line = False

    def elapsed(self) -> float:
        return self.elapsed_before + time.perf_counter() - self.start_time

    def step(self, step: int, loss: float, lr: float, grad_norm: float, tokens: int,
             seconds: float) -> None:
        self.window_tokens += tokens
        self.window_seconds += seconds
        now = time.perf_counter()
        if self.tty:
            if now - self.last_draw < 0.2 and step != self.total:
                return
        elif step % self.every and step != self.total:
            return
        self.last_draw = now
        rate = self.window_tokens / max(self.window_seconds, 1e-9)
        self.window_tokens, self.window_seconds = 0, 0.0
        per_step = (now - self.start_time) / max(step - self.start_step, 1)
        line = (f"step {step:>{len(str(self.total))}}/{self.total}  loss {loss:.4f}  lr {lr:.2e}  "
                f"|g| {grad_norm:.2f}  {rate / 1000:.1f}k tok/s  elapsed {_clock(self.elapsed())}  "
                f"eta <= {_clock(per_step * (self.total - step))}")
        if self.tty:
            self.stream.write("\r" + line + "\x1b[K")
            self.on_line = True
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def end_line(self) -> None:
        """Finish the terminal's progress line, so what follows starts on a fresh one."""
        if self.on_line:
            self.stream.write("\n")
            self.on_line = False

    def print(self, text: str) -> None:
        """A line that stays (evaluations, messages), below the progress line."""
        self.end_line()
        self.stream.write(text + "\n")
        self.stream.flush()


class StopRequest:
    """Ctrl-C during training: finish the current step, save, and stop.

    The first SIGINT only sets ``requested``; the loop checks it between steps,
    so a checkpoint is never taken halfway through an update. The handler is
    installed before anything else of the run (building the model, reading a
    checkpoint), so a Ctrl-C right after the start is such a request too. A
    second Ctrl-C aborts without saving, as the message says: it sets
    ``aborted`` and raises KeyboardInterrupt at once. Outside the main thread
    (where signal handlers cannot be installed) Ctrl-C arrives as
    KeyboardInterrupt instead, which ``train`` handles like a first Ctrl-C.
    """

    def __init__(self, stream):
        self.stream, self.requested, self.aborted, self.previous = stream, False, False, None
        self.progress: Progress | None = None

    @contextmanager
    def reporting_to(self, progress: Progress):
        """Within the block, print the Ctrl-C message below ``progress``'s line, not across it."""
        self.progress = progress
        try:
            yield self
        finally:
            self.progress = None

    def _handle(self, signum, frame):
        if self.requested:
            self.aborted = True
            raise KeyboardInterrupt
        self.requested = True
        text = "Ctrl-C: stopping after this step and saving (press again to abort without saving)"
        if self.progress is not None:
            self.progress.print(text)
        else:
            self.stream.write(text + "\n")
            self.stream.flush()

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
