"""Greedy decoding with and without the KV cache.

Times ``greedy_decode`` on a batch of 64 random sources of length L, generating L
tokens (``stop_at_eos=False``, so every run decodes the full length), for
L = 16, 32, 64, with the reference configuration (d_model 64, 4 heads, d_ff 256,
2 + 2 layers, vocabulary of 10 symbols) in float32 and random weights (speed
does not depend on what the weights are). Cached and uncached runs alternate,
after one warm-up run each, and the median of the repeats is reported. The
two must produce the same tokens; the script checks it.

    python benchmarks/decode_bench.py [--repeats 5] [--lengths 16 32 64] [--batch 64]

prints a Markdown table and writes benchmarks/results/decode.json.
``measure_decode`` is importable for a combined benchmark runner.

``greedy_decode`` holds NumPy's BLAS to one thread while it runs
(``tinytransformer.threads``): a BLAS worker thread that must wait for a core
adds milliseconds to a product that takes microseconds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from tinytransformer.decode import greedy_decode
from tinytransformer.nn.transformer import Transformer, TransformerConfig
from tinytransformer.tasks import FIRST_SYMBOL

RESULTS = Path(__file__).resolve().parent / "results" / "decode.json"
N_SYMBOLS = 10


def _time(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process, all threads) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def measure_decode(lengths=(16, 32, 64), batch: int = 64, repeats: int = 5, seed: int = 0,
                   peer=None) -> dict:
    """Median seconds to greedy-decode ``batch`` sequences of each length, cached and uncached.

    Returns {"rows": [{"length", "cached_s", "uncached_s", "speedup", ...}, ...], plus the setup}.
    Seconds are wall-clock; the CPU seconds of the process (all BLAS threads) are kept alongside,
    since a busy machine stretches wall time. ``peer(src, length)``, if given, returns
    {True: run_cached, False: run_uncached} of another implementation on the same sources; its
    runs take turns with NumPy's (so a change of machine load hits both), and each row gains
    "peer_cached_s" and "peer_uncached_s" (wall-clock only: the process's CPU time would count
    both sides).
    """
    config = TransformerConfig(vocab_size=FIRST_SYMBOL + N_SYMBOLS)
    if max(lengths) > config.max_len:
        raise ValueError(f"lengths: at most the model's max_len {config.max_len}, got {max(lengths)}")
    rng = np.random.default_rng(seed)
    model = Transformer(config, rng, dtype=np.float32).eval()
    rows = []
    for length in lengths:
        src = rng.integers(FIRST_SYMBOL, config.vocab_size, size=(batch, length))
        runs = {True: lambda: greedy_decode(model, src, length, use_cache=True, stop_at_eos=False),
                False: lambda: greedy_decode(model, src, length, use_cache=False, stop_at_eos=False)}
        cached_tokens, uncached_tokens = runs[True](), runs[False]()          # warm-up, and a check
        if not np.array_equal(cached_tokens, uncached_tokens) or cached_tokens.shape != (batch, length):
            raise AssertionError(f"length {length}: cached and uncached decoding disagree")
        peer_runs = peer(src, length) if peer is not None else {}
        peer_tokens = [np.asarray(run()) for run in peer_runs.values()]      # the same for the peer
        if peer_tokens and (not np.array_equal(*peer_tokens) or peer_tokens[0].shape != (batch, length)):
            raise AssertionError(f"length {length}: the peer's cached and uncached decoding disagree")
        wall, cpu = {True: [], False: []}, {True: [], False: []}
        peer_wall = {True: [], False: []}
        for _ in range(repeats):
            for use_cache in (True, False):
                seconds, cpu_seconds = _time(runs[use_cache])
                wall[use_cache].append(seconds)
                cpu[use_cache].append(cpu_seconds)
                if peer_runs:
                    peer_wall[use_cache].append(_time(peer_runs[use_cache])[0])
        cached, uncached = float(np.median(wall[True])), float(np.median(wall[False]))
        rows.append({"length": length, "cached_s": cached, "uncached_s": uncached,
                     "speedup": uncached / cached,
                     "cached_cpu_s": float(np.median(cpu[True])),
                     "uncached_cpu_s": float(np.median(cpu[False])),
                     "cached_all_s": wall[True], "uncached_all_s": wall[False]})
        if peer_runs:
            rows[-1].update(peer_cached_s=float(np.median(peer_wall[True])),
                            peer_uncached_s=float(np.median(peer_wall[False])))
    return {
        "benchmark": "greedy decoding, KV cache vs recomputing the prefix",
        "batch": batch, "repeats": repeats, "dtype": "float32", "weights": "random",
        "config": config.to_dict(),
        "machine": {"python": platform.python_version(), "numpy": np.__version__,
                    "cpu_count": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                    "load_average_1min_after": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
                    "threads": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")
                                if k in os.environ}},
        "rows": rows,
    }


def markdown_table(result: dict) -> str:
    lines = [f"Greedy decoding of {result['batch']} sequences, reference config, {result['dtype']}, "
             f"median of {result['repeats']}:",
             "",
             "| length | with cache (s) | without cache (s) | speedup | CPU s, with / without |",
             "|---:|---:|---:|---:|---:|"]
    for row in result["rows"]:
        lines.append(f"| {row['length']} | {row['cached_s']:.3f} | {row['uncached_s']:.3f} "
                     f"| {row['speedup']:.1f}x | {row['cached_cpu_s']:.3f} / {row['uncached_cpu_s']:.3f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[16, 32, 64])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    result = measure_decode(tuple(args.lengths), args.batch, args.repeats)
    print(markdown_table(result))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
