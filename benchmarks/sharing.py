"""Where to spread a training step over both cores: the gradient worker beside one BLAS thread, BLAS
on every thread with no worker (``tinytransformer.threads.products_shared``), or the batch split
over the threads, each part on a replica of the model (``tinytransformer/nn/batch_split.py``).

    python benchmarks/sharing.py            # about 8 minutes on 2 cores; sharing.json and sharing.md
    python benchmarks/sharing.py --quick    # tiny shapes, seconds (a smoke test, not a measurement)

Each configuration's step is timed the three ways, taking turns (run.py's ``interleaved``):
"worker" never shares or splits (``SHARE_FROM``, ``SHARE_WEIGHTS_FROM`` and ``SPLIT_FROM``
infinite), "shared" always shares and never splits (the first two 0, ``SPLIT_UNDER_WEIGHTS`` 0),
"split" always splits (``SPLIT_FROM`` 0, ``SPLIT_UNDER_WEIGHTS`` infinite, never shared). The
size of a step is its model's multiply-adds per token times the tokens of its batch (what the
package compares with ``SPLIT_FROM`` and ``SHARE_FROM``), so the table says where the crossovers
lie on this machine.
Configurations: the reference step (reverse, batch 64, lengths 1..16) and the same model at
longer sequences and wider d_model; the text model's shapes (4 layers, d_model 128, block 128,
batch 32) and GPT-2 small's (batch 4 of 256 tokens), each as run.py's ``LMRunner`` (GPT-2's
layout, AdamW). GPT-2 small is not split (each part would keep 500 MB of gradients; the
package shares its products instead).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

import run  # noqa: E402  (benchmarks/run.py: the runners and the timing)
from machine import commit, describe, stated  # noqa: E402

threads_module = sys.modules["tinytransformer.threads"]      # the package exports the function `threads`

# the thresholds of tinytransformer/threads.py for each way of running a step
INF = float("inf")
SETTINGS = ("SHARE_FROM", "SHARE_WEIGHTS_FROM", "SPLIT_FROM", "SPLIT_UNDER_WEIGHTS")
MODES = {"worker": (INF, INF, INF, 0.0), "shared": (0.0, 0.0, INF, 0.0), "split": (INF, INF, 0.0, INF)}


def configurations(quick: bool) -> list[dict]:
    """(label, runner, batches) of every configuration measured."""
    if quick:
        sizes = dict(d_model=16, n_heads=2, d_ff=32, n_layers=1)
        lm = dict(vocab_size=29, d_model=16, n_heads=2, d_ff=32, n_layers=1, max_len=9)
        return [
            {"label": "reference, quick", "runner": lambda: run.NumpyRunner(**sizes, max_len=7),
             "batches": lambda: run.reference_batches(2, seed=2, max_len=6, batch_size=4)},
            {"label": "language model, quick", "runner": lambda: run.LMRunner(**lm),
             "batches": lambda: lm_batches(29, 2, 8, 2)},
        ]
    ref = run.REFERENCE["sizes"]
    found = [{"label": "reference step (lengths 1..16)",
              "runner": lambda: run.NumpyRunner(**ref, max_len=17),
              "batches": lambda: run.reference_batches(4, seed=2)}]
    for length in (32, 48, 64, 128, 256):
        found.append({"label": f"reference model, length {length}",
                      "runner": lambda length=length: run.NumpyRunner(**ref, max_len=length + 1),
                      "batches": lambda length=length: run.reference_batches(
                          4, seed=2, min_len=length, max_len=length)})
    for width in (128, 256, 512):
        found.append({"label": f"reference model, d_model {width}",
                      "runner": lambda width=width: run.NumpyRunner(**{**ref, "d_model": width,
                                                                      "d_ff": 4 * width}, max_len=17),
                      "batches": lambda: run.reference_batches(4, seed=2)})
    found.append({"label": "text model's shapes (batch 32 of 128)",
                  "runner": lambda: run.LMRunner(vocab_size=100, d_model=128, n_heads=4, d_ff=512,
                                                 n_layers=4, max_len=128),
                  "batches": lambda: lm_batches(100, 32, 128, 4)})
    found.append({"label": "GPT-2 small's shapes (batch 4 of 256)",
                  "runner": lambda: run.LMRunner(**run.GPT2["sizes"]),
                  "batches": lambda: lm_batches(run.GPT2["sizes"]["vocab_size"], 4, 256, 2), "blocks": 3,
                  "no_split": True})
    return found


def lm_batches(vocab_size: int, batch_size: int, length: int, n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    return [rng.integers(0, vocab_size, (batch_size, length + 1)) for _ in range(n)]


class Mode:
    """One runner's step under one choice of the thresholds (what run.interleaved times)."""

    threads = None

    def __init__(self, name: str, runner):
        self.name, self.runner = name, runner

    def convert(self, batch):
        return batch

    def step(self, batch) -> None:
        for name, value in zip(SETTINGS, MODES[self.name]):
            setattr(threads_module, name, value)
        try:
            self.runner.step(batch)
        finally:
            for name, value in DEFAULTS.items():
                setattr(threads_module, name, value)


DEFAULTS = {name: getattr(threads_module, name) for name in SETTINGS}


def tokens(batch) -> int:
    return int(batch.tgt_in.size if hasattr(batch, "tgt_in") else batch[:, :-1].size)


def measure(quick: bool) -> dict:
    rows = []
    for c in configurations(quick):
        runner, batches = c["runner"](), c["batches"]()
        work = tokens(batches[0]) * runner.model.multiply_adds_per_token
        blocks = 2 if quick else c.get("blocks", 5)
        per_block = 1 if quick or "blocks" in c else 4
        modes = [name for name in MODES if name != "split" or not c.get("no_split")]
        timed = run.interleaved([Mode(name, runner) for name in modes], "step", batches,
                                warmup=1, blocks=blocks, per_block=per_block)
        rows.append({"label": c["label"], "multiply_adds": work,
                     **{name: timed[name]["median_s"] if name in timed else None for name in MODES},
                     "samples_s": {name: timed[name]["samples_s"] for name in modes}})
        print(f"{c['label']}: {work / 1e9:.2f} G, " + ", ".join(
            f"{name} {1e3 * timed[name]['median_s']:.1f} ms" for name in modes), flush=True)
    return {"machine": describe() + blas_version(), "commit": commit(), "quick": quick,
            "share_from": DEFAULTS["SHARE_FROM"], "split_from": DEFAULTS["SPLIT_FROM"],
            "load_average_end": os.getloadavg()[0], "rows": rows}


def blas_version() -> str:
    from threadpoolctl import threadpool_info
    found = [f"{lib['internal_api']} {lib['version']}" for lib in threadpool_info() if lib["user_api"] == "blas"]
    return f" ({', '.join(found)})" if found else ""


def markdown(results: dict) -> str:
    lines = [stated(results["machine"], results["commit"]) + " What: median seconds of a training "
             "step with the parameter-gradient worker beside one BLAS thread (worker), with BLAS "
             "on both threads and no worker (shared), and with the batch split in two halves, the "
             "model computing the first and a replica of it the second, each on a thread of its own "
             "with one BLAS thread (split), the three taking turns; size: "
             "the model's multiply-adds per token times the batch's tokens, what the package compares "
             f"with `SPLIT_FROM` = {results['split_from']:.0e} and `SHARE_FROM` = "
             f"{results['share_from']:.0e}. Load average at the end: "
             f"{results['load_average_end']:.2f}.", "",
             "| step | size (G multiply-adds) | worker (ms) | shared (ms) | split (ms) | shared / worker "
             "| split / worker |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in results["rows"]:
        split = ("not split", "") if r["split"] is None else (f"{1e3 * r['split']:.1f}",
                                                              f"{r['split'] / r['worker']:.2f}")
        lines.append(f"| {r['label']} | {r['multiply_adds'] / 1e9:.2f} | {1e3 * r['worker']:.1f} | "
                     f"{1e3 * r['shared']:.1f} | {split[0]} | {r['shared'] / r['worker']:.2f} | {split[1]} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny shapes: a smoke test")
    parser.add_argument("--out", type=Path, default=None,
                        help="directory of sharing.json and sharing.md (default benchmarks/results; "
                             "required with --quick)")
    args = parser.parse_args(argv)
    if args.quick and args.out is None:
        parser.error("--quick writes only to a directory given with --out")
    out = args.out or HERE / "results"
    results = measure(args.quick)
    out.mkdir(parents=True, exist_ok=True)
    (out / "sharing.json").write_text(json.dumps(results, indent=1) + "\n")
    (out / "sharing.md").write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
