"""What the modern parts cost per training step, against the reference model.

    python benchmarks/modern_cost.py                  # ~1-2 minutes on 2 cores
    python benchmarks/modern_cost.py --rounds 20      # shorter, noisier
    python benchmarks/modern_cost.py --table          # the table again from the saved results

Every model is the reference configuration (encoder-decoder, d_model 64, 4 heads,
d_ff 256, 2 + 2 layers, float32) with one choice changed, or the "modern" preset
(rope + rmsnorm + swiglu, pre-LN) with all of them; the same 64-sequence batches of
reverse (lengths 1..16) go through the package's training step (zero_grad, forward,
loss, backward, Adam). The models take turns one step at a time, round after round,
so that a change in the machine's load hits all of them alike; the table gives each
one's median step and its ratio to the reference model's median. NumPy is imported
first and the package holds its threads itself (two, as in `tinytransformer train`).
Results: benchmarks/results/modern_cost.json, and its Markdown table modern_cost.md (also printed).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))          # the package of this checkout

from tinytransformer import PRESETS, Adam, CrossEntropyLoss, Transformer, TransformerConfig  # noqa: E402
from tinytransformer.tasks import PAD, Vocab, make_batch  # noqa: E402

from machine import commit, cpu_name, stated  # noqa: E402  (benchmarks/, the script's own folder)

VOCAB = Vocab(10)
VARIANTS = {
    "reference (sinusoidal, layernorm, relu)": {},
    "positional rope": dict(positional="rope"),
    "positional alibi": dict(positional="alibi"),
    "positional none": dict(positional="none"),
    "norm rmsnorm": dict(norm="rmsnorm"),
    "activation swiglu": dict(activation="swiglu"),
    "preset modern (rope, rmsnorm, swiglu)": PRESETS["modern"],
    # SwiGLU has three D x d_ff matrices to the plain network's two: LLaMA shrinks d_ff to 2/3
    "preset modern, d_ff 170 (the reference's parameter count)": dict(PRESETS["modern"], d_ff=170),
}


class Run:
    """One model, its optimizer and loss: the package's training step."""

    def __init__(self, options: dict, seed: int = 0):
        config = TransformerConfig(vocab_size=VOCAB.size, **options)
        self.model = Transformer(config, np.random.default_rng(seed))
        self.opt = Adam(self.model, lr=1e-3, betas=(0.9, 0.98), eps=1e-9)
        self.crit = CrossEntropyLoss(ignore_index=PAD, label_smoothing=0.1)

    def step(self, batch) -> float:
        start = time.perf_counter()
        self.model.zero_grad()
        logits = self.model(batch.src, batch.tgt_in)
        self.crit(logits, batch.labels)
        self.model.backward(self.crit.backward())
        self.opt.step()
        return time.perf_counter() - start


def table(result: dict) -> str:
    """The Markdown table of one measurement, under the line that states where it ran."""
    machine = f"{result['machine']}, Python {result['python']}, NumPy {result['numpy']}"
    load = result.get("load_average")     # (before, after): the machine is often shared; older results lack it
    during = (f" Load average (1 minute) {load[0]:.1f} before, {load[1]:.1f} after." if load
              else " Load average not recorded.")
    lines = [f"{stated(machine, result.get('commit'))} Median of {result['rounds']} interleaved steps each."
             + during,
             "", "| model | parameters | step (ms) | / reference |", "|---|---:|---:|---:|"]
    lines += [f"| {row['model']} | {row['parameters']:,} | {row['median_ms']:.1f} | {row['ratio']:.2f} |"
              for row in result["rows"]]
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=60, help="timed steps per model (default 60)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps per model first")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "modern_cost.json")
    parser.add_argument("--table", action="store_true", help="measure nothing: write the table from --out")
    args = parser.parse_args(argv)
    result = json.loads(args.out.read_text()) if args.table else measure(args)
    text = table(result)
    args.out.with_suffix(".md").write_text(text)
    print(text)
    return result


def measure(args) -> dict:
    """Every variant's training step, the variants taking turns; written to ``args.out``."""
    load_before = os.getloadavg()[0]
    rng = np.random.default_rng(1)
    batches = [make_batch("reverse", VOCAB, 64, 1, 16, rng) for _ in range(16)]
    runs = {name: Run(options) for name, options in VARIANTS.items()}
    for run in runs.values():
        for i in range(args.warmup):
            run.step(batches[i % len(batches)])
    samples = {name: [] for name in runs}
    for i in range(args.rounds):                  # one step each, in turn
        for name, run in runs.items():
            samples[name].append(run.step(batches[i % len(batches)]))
    reference = float(np.median(samples[next(iter(runs))]))
    rows = []
    for name, run in runs.items():
        median = float(np.median(samples[name]))
        rows.append({"model": name, "parameters": run.model.num_parameters(), "median_ms": 1e3 * median,
                     "ratio": median / reference, "samples_s": [round(s, 6) for s in samples[name]]})
    result = {"rows": rows, "rounds": args.rounds, "numpy": np.__version__, "python": platform.python_version(),
              "machine": f"{cpu_name()}, {os.cpu_count()} cores ({platform.machine()})", "commit": commit(),
              "load_average": [load_before, os.getloadavg()[0]]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
