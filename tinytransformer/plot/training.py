"""How training went: the four curves of a run, and exact match against length."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from .canvas import new_figure, save_figure


def _smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Bias-corrected exponential moving average with time constant ``window`` steps.

    Non-finite values (a diverged step) are skipped, the average carried over them.
    """
    decay = 1.0 - 1.0 / window
    out = np.full(len(values), np.nan)
    average, weight = 0.0, 0.0
    for t, v in enumerate(values):
        if np.isfinite(v):
            average = decay * average + (1 - decay) * v
            weight = decay * weight + (1 - decay)
        if weight > 0:
            out[t] = average / weight    # divide by the weight so early steps are not pulled to 0
    return out


def _series(history: dict, name: str, n: int) -> np.ndarray | None:
    if not history.get(name):
        return None
    values = np.asarray(history[name], dtype=float)
    if values.shape != (n,):
        raise ValueError(f"history[{name!r}]: expected {n} values (one per step), "
                         f"got shape {values.shape}")
    return values


def _no_data(ax, what: str) -> None:
    ax.text(0.5, 0.5, f"no {what} recorded", transform=ax.transAxes, ha="center", va="center",
            color="0.5")


def _accuracy_panel(ax, evals: list, target, target_worst) -> None:
    eval_steps = [e["step"] for e in evals]
    ax.plot(eval_steps, [e["token_accuracy"] for e in evals], "o-", color="C2", ms=4,
            label="token accuracy")
    ax.plot(eval_steps, [e["exact_match"] for e in evals], "s-", color="C3", ms=4,
            label="exact match (whole sequence)")
    if all("worst" in e for e in evals):
        ax.plot(eval_steps, [e["worst"] for e in evals], "^--", color="C3", ms=4, alpha=0.6,
                label="exact match at the worst length")
    if target is not None:
        ax.axhline(target, color="0.3", ls="--", lw=1, label=f"target {target:g}")
        reached = [s for s, e in zip(eval_steps, evals) if e["exact_match"] >= target
                   and (target_worst is None or e.get("worst", 1.0) >= target_worst)]
        if reached:
            ax.axvline(reached[0], color="0.3", ls=":", lw=1,
                       label=f"solved at step {reached[0]}" if target_worst is not None
                       else f"target first reached, step {reached[0]}")
    ax.legend(fontsize=8, loc="lower right")
    ax.set(title="Held-out accuracy (greedy decoding)", ylabel="fraction correct", ylim=(-0.02, 1.02))


def _bits_per_char_panel(ax, evals: list) -> None:
    eval_steps = [e["step"] for e in evals]
    bpc = [e["bpc"] for e in evals]
    ax.plot(eval_steps, bpc, "o-", color="C2", ms=4, label="validation")
    best = int(np.argmin(bpc))
    ax.plot(eval_steps[best], bpc[best], "*", color="C3", ms=12, label=f"best, {bpc[best]:.3f} at step "
            f"{eval_steps[best]}")
    ax.legend(fontsize=8, loc="upper right")
    ax.set(title="Validation bits per character (lower is better)", ylabel="bits per character")


def plot_training_curves(history: dict, save=None) -> Figure:
    """Loss, learning rate, held-out accuracy and gradient norm against the training step.

    ``history``: ``{"step": [...], "loss": [...], "lr": [...], "grad_norm": [...],
    "eval": [{"step", "exact_match", "token_accuracy"}, ...]}`` (each evaluation may also
    give "worst", the exact match of its worst length, and "worst_length"; a text run's
    evaluations give "bpc", validation bits per character, instead) and optionally
    ``"target"`` and ``"target_worst"`` (the stop rule: exact match at least ``target``
    overall and at least ``target_worst`` at every length). Missing series leave their
    panel empty with a note.
    """
    if not history.get("step"):
        raise ValueError("history: expected a non-empty 'step' list")
    steps = np.asarray(history["step"], dtype=float)
    loss = _series(history, "loss", len(steps))
    lr = _series(history, "lr", len(steps))
    grad_norm = _series(history, "grad_norm", len(steps))
    evals = history.get("eval") or []
    target, target_worst = history.get("target"), history.get("target_worst")

    fig = new_figure(11.0, 7.0)
    (ax_loss, ax_lr), (ax_eval, ax_grad) = fig.subplots(2, 2, sharex=True)
    if loss is None:
        _no_data(ax_loss, "loss")
    else:
        window = len(loss) // 25
        if window >= 2:   # too few steps to be worth smoothing otherwise
            ax_loss.plot(steps, loss, color="C0", alpha=0.3, lw=0.8, label="each step")
            ax_loss.plot(steps, _smooth(loss, window), color="C0", lw=2,
                         label=f"smoothed (moving average over ~{window} steps)")
            ax_loss.legend(fontsize=8)
        else:
            ax_loss.plot(steps, loss, color="C0", lw=1.2)
        ax_loss.set_yscale("log")
    ax_loss.set(title="Training loss (cross-entropy per target token)", ylabel="loss (log scale)")

    if lr is None:
        _no_data(ax_lr, "learning rate")
    else:
        ax_lr.plot(steps, lr, color="C1")
        ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    ax_lr.set(title="Learning rate (warm-up, then decay)", ylabel="learning rate")

    if not evals:
        _no_data(ax_eval, "evaluation")
    elif all("bpc" in e for e in evals):
        _bits_per_char_panel(ax_eval, evals)
    else:
        _accuracy_panel(ax_eval, evals, target, target_worst)
    ax_eval.set(xlabel="training step")

    if grad_norm is None:
        _no_data(ax_grad, "gradient norm")
    else:
        ax_grad.plot(steps, grad_norm, color="C4", lw=0.8)
        ax_grad.set_yscale("log")
    ax_grad.set(title="Global gradient norm", ylabel="norm (log scale)", xlabel="training step")
    ax_grad.xaxis.set_major_locator(MaxNLocator(integer=True))   # shared by all four panels
    fig.suptitle("Training curves")
    return save_figure(fig, save)


def plot_length_generalisation(lengths, exact_match, train_max_len: int, save=None,
                               train_min_len: int = 1) -> Figure:
    """Exact match against sequence length, the lengths seen in training shaded.

    ``exact_match``: one value per length, or a dict label -> values to
    compare several models (say sinusoidal vs learned positions).
    """
    lengths = np.asarray(lengths)
    series = exact_match if isinstance(exact_match, dict) else {"exact match": exact_match}
    fig = new_figure(7.5, 4.5)
    ax = fig.subplots()
    ax.axvspan(train_min_len - 0.5, train_max_len + 0.5, color="0.92",
               label=f"training lengths ({train_min_len}-{train_max_len})")
    for label, values in series.items():
        values = np.asarray(values, dtype=float)
        if values.shape != lengths.shape:
            raise ValueError(f"exact_match[{label!r}]: expected {lengths.shape[0]} values (one per "
                             f"length), got shape {values.shape}")
        ax.plot(lengths, values, "o-", ms=4, label=label)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel="sequence length (symbols)", ylabel="exact match (whole sequence right)",
           ylim=(-0.02, 1.02), title="Length generalisation: exact match vs sequence length")
    ax.set_xlim(min(lengths.min(), train_min_len) - 0.5, max(lengths.max(), train_max_len) + 0.5)
    ax.legend(fontsize=9, loc="lower left")
    return save_figure(fig, save)
