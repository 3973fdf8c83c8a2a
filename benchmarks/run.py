"""Benchmarks of tinytransformer, beside the same model in PyTorch eager when torch is importable.

    python benchmarks/run.py                     # everything but the reference runs (a few minutes)
    python benchmarks/run.py --reference-runs    # instead: the reference run until solved, 10 seeds
    python benchmarks/run.py --quick             # a tiny smoke run (seconds), used by the tests
    python benchmarks/run.py --large             # instead: only the steps at GPT-2 small's shapes

What is measured, for the reference configuration (reverse task, 10 symbols,
lengths 1..16, batch 64, d_model 64, 4 heads, d_ff 256, 2 + 2 layers, float32):

- a training step (zero_grad, forward, loss, backward, Adam update): median ms
  and target tokens per second; forward + loss + backward alone; the time of
  each phase; where the NumPy time goes, layer by layer (each module's forward
  and backward timed exclusive of its children); PyTorch's top operators;
- greedy decoding of 64 sequences of length 16/32/64, with and without the KV
  cache (``decode_bench.measure_decode``, NumPy's and PyTorch's runs taking turns on the
  same sources);
- the step time against the sequence length (16..512) and d_model (32..768);
- a training step at GPT-2 small's shapes (12 layers, d_model 768, 12 heads, vocabulary 50257,
  learned positions, tanh GELU, tied embeddings, random weights; batch 4 of 256 tokens; AdamW),
  full and with LoRA adapters (rank 8 on w_q and w_v), each with the growth of the resident
  memory during a step;
- the machine's single-precision matrix-product peak (one 2048 x 2048 product on every core,
  measured in the same run), and the fraction of it each configuration's step reaches: the
  matrix-product FLOPs of the step (counted from the shapes each product met) per second;
- the peak memory of a training step (tracemalloc) and the bytes held between
  forward and backward (every array in a module's ``.cache``; for PyTorch, the
  tensors autograd saves);
- with ``--reference-runs`` (and nothing else): steps and seconds until the reference run
  solves reverse, seeds 0-9, NumPy and PyTorch (``benchmarks/reference_runs.py``).

Timing: wall clock (``time.perf_counter``), medians over many steps, NumPy and
PyTorch interleaved in blocks so that a change in machine load hits both. Both
get the same number of threads (``--threads``, default 2, the cores of the machine
the targets are set for): PyTorch through ``torch.set_num_threads``; NumPy through
``tinytransformer.threads(N)``: its products on one BLAS thread and, from 2 threads on,
its parameter gradients on a second thread (``tinytransformer.nn.overlap``), or, for a
large model call, both threads otherwise: a training call of 7e8 multiply-adds or more by a
model under 2e7 weights splits its batch over them (``nn/batch_split.py``: the scaling rows
from length 64 and from d_model 128 to 512), any other call of 1e9 or more puts every
product on both (``threads.products_shared``: the GPT-2 shapes, d_model 768); it has no use
for a third. NumPy is imported first, as a learner does, and no thread variable is
set: the package holds its threads itself. The training step is also measured with one
thread each. The CPU time of the process is
kept alongside.

Results: ``benchmarks/results/benchmark.json`` (every number, raw samples
included), ``benchmarks/results/README.md`` (the Markdown tables, also printed)
and ``figures/benchmark_scaling.png`` (the scaling curves); the GPT-2-shape steps
and the matrix-product peak in ``large.json`` and ``large.md``. ``--quick`` writes to
``--out`` only (default: a temporary directory), never over the full results.
"""

from __future__ import annotations

import argparse
import os
import sys


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="tinytransformer benchmarks (NumPy vs PyTorch eager)")
    parser.add_argument("--quick", action="store_true", help="a tiny run to check that everything works")
    parser.add_argument("--threads", type=int, default=2,
                        help="threads for NumPy and PyTorch alike (default 2); NumPy uses at most 2: "
                             "one BLAS thread and the parameter-gradient worker, or two BLAS threads "
                             "for a large model call")
    parser.add_argument("--reference-runs", action="store_true",
                        help="instead: the reference run until solved, over --seeds, NumPy and PyTorch "
                             "(benchmarks/reference_runs.py; 20-30 minutes)")
    parser.add_argument("--large", action="store_true",
                        help="instead: only the matrix-product peak and the training steps at GPT-2 "
                             "small's shapes, full and LoRA (large.json, large.md; the full run "
                             "measures them too)")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(10)),
                        help="seeds of the reference runs (default 0-9)")
    parser.add_argument("--no-torch", action="store_true", help="skip PyTorch even if it is installed")
    parser.add_argument("--out", type=str, default=None,
                        help="directory for the JSON and Markdown results (default benchmarks/results, "
                             "or a temporary directory with --quick)")
    parser.add_argument("--table", action="store_true",
                        help="run nothing: write the Markdown results again from the JSON in --out")
    parser.add_argument("--figure", type=str, default=None,
                        help="path of the scaling figure (default figures/benchmark_scaling.png, or "
                             "<out>/benchmark_scaling.png with --quick)")
    return parser.parse_args(argv)


import contextlib  # noqa: E402
import json  # noqa: E402
import tempfile  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from threadpoolctl import threadpool_info  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT), str(HERE)]          # the package of this checkout, and decode_bench

from tinytransformer import optim, threads  # noqa: E402
from tinytransformer.nn import overlap  # noqa: E402
from tinytransformer.nn.loss import CrossEntropyLoss  # noqa: E402
from tinytransformer.nn.attention import ScaledDotProductAttention  # noqa: E402
from tinytransformer.nn.linear import Linear  # noqa: E402
from tinytransformer.nn.lora import LoRALinear, add_lora  # noqa: E402
from tinytransformer.nn.module import Module  # noqa: E402
from tinytransformer.nn.transformer import DecoderOnlyTransformer, Transformer, TransformerConfig  # noqa: E402
from tinytransformer.threads import CORES  # noqa: E402
from tinytransformer.tasks import PAD, Vocab, make_batch  # noqa: E402
from machine import commit, cpu_name, stated  # noqa: E402

try:
    import torch
    import torch_reference
except ImportError:            # PyTorch is optional: the NumPy columns are measured alone
    torch = None

N_SYMBOLS = 10
VOCAB = Vocab(N_SYMBOLS)
# the reference configuration, and the tiny one of --quick (a smoke test, not a measurement)
REFERENCE = {"sizes": dict(d_model=64, n_heads=4, d_ff=256, n_layers=2), "batch_size": 64, "max_len": 16}
QUICK = {"sizes": dict(d_model=16, n_heads=2, d_ff=32, n_layers=1), "batch_size": 8, "max_len": 6}
# GPT-2 small's shapes, and a tiny stand-in for --quick
GPT2 = {"sizes": dict(vocab_size=50257, d_model=768, n_heads=12, d_ff=3072, n_layers=12, max_len=1024),
        "batch_size": 4, "length": 256, "lora_rank": 8}
GPT2_QUICK = {"sizes": dict(vocab_size=97, d_model=24, n_heads=2, d_ff=48, n_layers=1, max_len=16),
              "batch_size": 2, "length": 8, "lora_rank": 2}
ADAMW = dict(lr=1e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)      # torch's AdamW defaults


# ---- the two implementations behind one interface --------------------------------------------


class NumpyRunner:
    """A tinytransformer model, its Adam and its loss; batches are tasks.Batch objects."""

    name = "NumPy"
    threads = None          # set: interleaved() switches to this thread count for its blocks
    numpy_threads = 2       # what tinytransformer.threads() holds around each call (set_threads)

    def __init__(self, d_model=64, n_heads=4, d_ff=256, n_layers=2, max_len=64, seed=0):
        config = TransformerConfig(vocab_size=VOCAB.size, d_model=d_model, n_heads=n_heads, d_ff=d_ff,
                                   n_encoder_layers=n_layers, n_decoder_layers=n_layers, max_len=max_len)
        self.model = Transformer(config, rng=np.random.default_rng(seed))
        self.opt = optim.Adam(self.model, lr=1e-3, betas=(0.9, 0.98), eps=1e-9)
        self.crit = CrossEntropyLoss(ignore_index=PAD)

    def convert(self, batch):
        return batch

    def step(self, batch) -> None:
        """The package's training step (step.py), exactly."""
        with threads(NumpyRunner.numpy_threads):
            self.model.zero_grad()
            logits = self.model(batch.src, batch.tgt_in)
            self.crit(logits, batch.labels)
            self.model.backward(self.crit.backward())
            self.opt.step()

    def forward_backward(self, batch) -> None:
        with threads(NumpyRunner.numpy_threads):
            logits = self.model(batch.src, batch.tgt_in)
            self.crit(logits, batch.labels)
            self.model.backward(self.crit.backward())

    def phases(self, batch, clock) -> dict:
        with threads(NumpyRunner.numpy_threads):
            return self._phases(batch, clock)

    def _phases(self, batch, clock) -> dict:
        t0 = clock()
        self.model.zero_grad()
        t1 = clock()
        logits = self.model(batch.src, batch.tgt_in)
        t2 = clock()
        self.crit(logits, batch.labels)
        dlogits = self.crit.backward()
        t3 = clock()
        self.model.backward(dlogits)
        t4 = clock()
        self.opt.step()
        t5 = clock()
        return {"zero_grad": t1 - t0, "forward": t2 - t1, "loss": t3 - t2, "backward": t4 - t3,
                "optimizer": t5 - t4}


class TorchRunner:
    """The same model written with torch.nn (benchmarks/torch_reference.py), eager mode."""

    name = "PyTorch"
    threads = None

    def __init__(self, d_model=64, n_heads=4, d_ff=256, n_layers=2, max_len=64, seed=0):
        self.model, self.opt, self.loss_fn = torch_reference.build(
            VOCAB.size, d_model, n_heads, d_ff, n_layers, max_len, seed=seed, lr=1e-3)

    def convert(self, batch):
        return tuple(torch.from_numpy(a) for a in (batch.src, batch.tgt_in, batch.labels))

    def step(self, batch) -> None:
        src, tgt_in, labels = batch
        self.opt.zero_grad()
        loss = self.loss_fn(self.model(src, tgt_in), labels)
        loss.backward()
        self.opt.step()

    def forward_backward(self, batch) -> None:
        src, tgt_in, labels = batch
        self.loss_fn(self.model(src, tgt_in), labels).backward()

    def phases(self, batch, clock) -> dict:
        src, tgt_in, labels = batch
        t0 = clock()
        self.opt.zero_grad()
        t1 = clock()
        logits = self.model(src, tgt_in)
        t2 = clock()
        loss = self.loss_fn(logits, labels)
        t3 = clock()
        loss.backward()
        t4 = clock()
        self.opt.step()
        t5 = clock()
        return {"zero_grad": t1 - t0, "forward": t2 - t1, "loss": t3 - t2, "backward": t4 - t3,
                "optimizer": t5 - t4}


class LMRunner:
    """A DecoderOnlyTransformer of GPT-2's layout and AdamW; a batch is ids (B, T + 1)."""

    name = "NumPy"
    threads = None

    def __init__(self, vocab_size, d_model, n_heads, d_ff, n_layers, max_len, lora_rank=None, seed=0):
        config = TransformerConfig(vocab_size=vocab_size, d_model=d_model, n_heads=n_heads, d_ff=d_ff,
                                   n_decoder_layers=n_layers, max_len=max_len, positional="learned",
                                   activation="gelu_tanh", tie_embeddings=True, embed_scale=False,
                                   head_bias=False)
        self.model = DecoderOnlyTransformer(config, rng=np.random.default_rng(seed))
        if lora_rank is not None:
            add_lora(self.model, lora_rank, rng=np.random.default_rng(seed + 1))
        self.opt = optim.AdamW(self.model, **ADAMW)
        self.crit = CrossEntropyLoss()

    def convert(self, ids):
        return ids

    def step(self, ids) -> None:
        with threads(NumpyRunner.numpy_threads):
            self.model.zero_grad()
            self.crit(self.model(ids[:, :-1]), ids[:, 1:])
            self.model.backward(self.crit.backward())
            self.opt.step()


class TorchLMRunner:
    """The same layout in torch.nn (torch_reference.TorchLM), fused AdamW."""

    name = "PyTorch"
    threads = None

    def __init__(self, vocab_size, d_model, n_heads, d_ff, n_layers, max_len, lora_rank=None, seed=0):
        self.model, self.opt, self.loss_fn = torch_reference.build_lm(
            vocab_size, d_model, n_heads, d_ff, n_layers, max_len, seed=seed, lora_rank=lora_rank, **ADAMW)

    def convert(self, ids):
        return torch.from_numpy(ids)

    def step(self, ids) -> None:
        self.opt.zero_grad()
        self.loss_fn(self.model(ids[:, :-1]), ids[:, 1:]).backward()
        self.opt.step()


def same_model_check(batch, **sizes) -> dict:
    """The PyTorch model given the NumPy model's weights: the largest logit difference, and both losses."""
    numpy_side, torch_side = NumpyRunner(**sizes), TorchRunner(**sizes)
    torch_reference.load_numpy_weights(torch_side.model, numpy_side.model)
    logits = numpy_side.model(batch.src, batch.tgt_in)
    src, tgt_in, labels = torch_side.convert(batch)
    with torch.no_grad():
        torch_logits = torch_side.model(src, tgt_in)
        torch_loss = float(torch_side.loss_fn(torch_logits, labels))
    return {"max_abs_logit_difference": float(np.abs(logits - torch_logits.numpy()).max()),
            "numpy_loss": numpy_side.crit(logits, batch.labels), "torch_loss": torch_loss}


def runners(with_torch: bool, **sizes) -> list:
    found = [NumpyRunner(**sizes)]
    if with_torch:
        found.append(TorchRunner(**sizes))
    return found


def reference_batches(n: int, seed: int = 1, min_len: int = 1, max_len: int = 16, batch_size: int = 64):
    rng = np.random.default_rng(seed)
    return [make_batch("reverse", VOCAB, batch_size, min_len, max_len, rng) for _ in range(n)]


# ---- timing ----------------------------------------------------------------------------------


def interleaved(runs: list, method: str, batches: list, warmup: int, blocks: int, per_block: int) -> dict:
    """Per-step wall and CPU seconds of ``runner.<method>(batch)`` for every runner.

    Runners take turns, ``per_block`` steps each, ``blocks`` times, after
    ``warmup`` untimed steps each, so that a change of machine load hits all of them.
    """
    converted = {r.name: [r.convert(b) for b in batches] for r in runs}
    wall = {r.name: [] for r in runs}
    cpu = {r.name: [] for r in runs}
    for r in runs:
        if r.threads is not None:
            set_threads(r.threads)
        for i in range(warmup):
            getattr(r, method)(converted[r.name][i % len(batches)])
    i = 0
    for _ in range(blocks):
        for r in runs:
            if r.threads is not None:
                set_threads(r.threads)
            fn = getattr(r, method)
            for j in range(per_block):
                batch = converted[r.name][(i + j) % len(batches)]
                w, c = time.perf_counter(), time.process_time()
                fn(batch)
                wall[r.name].append(time.perf_counter() - w)
                cpu[r.name].append(time.process_time() - c)
        i += per_block
    return {name: {"median_s": float(np.median(wall[name])), "cpu_median_s": float(np.median(cpu[name])),
                   "samples_s": [round(s, 6) for s in wall[name]]} for name in wall}


def step_benchmark(runs, batches, warmup, blocks, per_block) -> dict:
    tokens = float(np.mean([b.n_tokens for b in batches]))
    out = {"tokens_per_batch": tokens}
    for method in ("step", "forward_backward"):
        result = interleaved(runs, method, batches, warmup, blocks, per_block)
        for r in result.values():
            r["tokens_per_s"] = tokens / r["median_s"]
        out[method] = result
    return out


def phase_benchmark(runs, batches, repeats) -> dict:
    """Median seconds of each phase of the step (zero_grad, forward, loss, backward, optimizer),
    the runners taking turns step by step."""
    converted = {r.name: [r.convert(b) for b in batches] for r in runs}
    samples = {r.name: [] for r in runs}
    for i in range(repeats):
        for r in runs:
            samples[r.name].append(r.phases(converted[r.name][i % len(batches)], time.perf_counter))
    return {name: {phase: float(np.median([s[phase] for s in got])) for phase in got[0]}
            for name, got in samples.items()}


@contextlib.contextmanager
def layer_timer(model: Module):
    """Time every module's forward and backward, exclusive of the time spent in its children.

    Yields a dict (class name, "forward"/"backward") -> total seconds. The
    methods are wrapped on the instances (the classes are untouched) and
    unwrapped on exit.
    """
    totals: dict[tuple[str, str], float] = {}
    child_time: list[float] = []            # a stack: time spent in the children of each open call

    def wrap(module: Module, method: str):
        original = getattr(module, method)
        key = (type(module).__name__, method)

        def timed(*args, **kwargs):
            child_time.append(0.0)
            start = time.perf_counter()
            result = original(*args, **kwargs)
            elapsed = time.perf_counter() - start
            inner = child_time.pop()
            totals[key] = totals.get(key, 0.0) + elapsed - inner
            if child_time:
                child_time[-1] += elapsed
            return result
        return timed

    wrapped = [m for name, m in model.named_modules() if name]          # the model itself is the step
    for m in wrapped:
        m.forward, m.backward = wrap(m, "forward"), wrap(m, "backward")
    try:
        yield totals
    finally:
        for m in wrapped:
            del m.forward, m.backward


def layer_breakdown(runner: NumpyRunner, batches, warmup: int, repeats: int) -> list[dict]:
    """Where a NumPy training step's time goes: ms per step by layer type and direction.

    Measured on one thread (the gradient worker off), so that each layer's parameter
    gradients are counted in its own backward rather than vanishing into the worker.
    """
    enabled, overlap.enabled = overlap.enabled, False
    for i in range(warmup):
        runner.step(batches[i % len(batches)])
    with layer_timer(runner.model) as totals:
        start = time.perf_counter()
        other = {"zero_grad": 0.0, "loss (forward + backward)": 0.0, "Adam update": 0.0}
        for i in range(repeats):
            p = runner.phases(batches[i % len(batches)], time.perf_counter)
            other["zero_grad"] += p["zero_grad"]
            other["loss (forward + backward)"] += p["loss"]
            other["Adam update"] += p["optimizer"]
        step_total = time.perf_counter() - start
    overlap.enabled = enabled
    rows = [{"part": f"{cls} {method}", "ms": 1e3 * t / repeats} for (cls, method), t in totals.items()]
    rows += [{"part": name, "ms": 1e3 * t / repeats} for name, t in other.items()]
    accounted = sum(r["ms"] for r in rows)
    rows.append({"part": "model glue (masks, embedding scale, residual sums)",
                 "ms": max(1e3 * step_total / repeats - accounted, 0.0)})
    total = sum(r["ms"] for r in rows)
    for r in rows:
        r["share"] = r["ms"] / total
    return sorted(rows, key=lambda r: -r["ms"])


def torch_top_ops(runner: "TorchRunner", batches, warmup: int, repeats: int, top: int = 12) -> list[dict]:
    """PyTorch's operators by self CPU time (torch.profiler), ms per step."""
    from torch.profiler import ProfilerActivity, profile
    converted = [runner.convert(b) for b in batches]
    for i in range(warmup):
        runner.step(converted[i % len(converted)])
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for i in range(repeats):
            runner.step(converted[i % len(converted)])
    events = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in events)
    return [{"op": e.key, "ms": e.self_cpu_time_total / 1e3 / repeats, "share": e.self_cpu_time_total / total,
             "calls_per_step": e.count / repeats} for e in events[:top]]


# ---- scaling ---------------------------------------------------------------------------------


def scaling(with_torch, lengths, d_models, warmup, blocks, per_block, sizes, batch_size) -> dict:
    """Median step time against the sequence length (every sequence that long, d_model 64)
    and against d_model (d_ff = 4 d_model, lengths 1..16); the other sizes are ``sizes``."""
    out = {"length": [], "d_model": []}
    for T in lengths:
        runs = runners(with_torch, **{**sizes, "max_len": T + 1})
        batches = reference_batches(4, seed=2, min_len=T, max_len=T, batch_size=batch_size)
        result = interleaved(runs, "step", batches, warmup, blocks, per_block)
        out["length"].append({"length": T, **{name: r["median_s"] for name, r in result.items()}})
    for D in d_models:
        runs = runners(with_torch, **{**sizes, "d_model": D, "d_ff": 4 * D})
        batches = reference_batches(4, seed=2, batch_size=batch_size)
        result = interleaved(runs, "step", batches, warmup, blocks, per_block)
        out["d_model"].append({"d_model": D, **{name: r["median_s"] for name, r in result.items()}})
    return out


# ---- large shapes, and the fraction of the machine's product peak ---------------------------


def matmul_peak(n: int, repeats: int) -> dict:
    """GFLOP/s of one float32 (n, n) @ (n, n) product with BLAS on every core (its best of
    ``repeats``): the machine's single-precision matrix-product peak, as NumPy reaches it."""
    from threadpoolctl import threadpool_limits
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((n, n), dtype=np.float32) for _ in range(2))
    with threadpool_limits(limits=CORES, user_api="blas"):
        a @ b
        best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return {"n": n, "threads": CORES, "seconds": best, "gflops": 2 * n ** 3 / best / 1e9}


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def step_flops(runner, batch) -> float:
    """Matrix-product FLOPs of one training step of a NumPy runner on ``batch``, counted from the
    shapes each product meets in a forward: a product with a trainable weight counts three times
    (forward, input gradient, weight gradient), with a frozen one twice, attention's three times."""
    total = [0.0]

    def counting(module, count):
        original = module.forward

        def counted(*args, **kwargs):
            total[0] += count(*args, **kwargs)
            return original(*args, **kwargs)
        module.forward = counted

    def linear(m):
        times = 2 if "weight" in m.frozen else 3
        return lambda x: times * 2 * (x.size // m.in_features) * m.in_features * m.out_features

    def lora(m):
        return lambda x: (x.size // m.in_features) * 2 * (2 * m.in_features * m.out_features
                                                         + 3 * m.rank * (m.in_features + m.out_features))

    def attention(q, k, v, mask=None):
        return 3 * 2 * (q.size // q.shape[-1]) * k.shape[-2] * (q.shape[-1] + v.shape[-1])

    modules = [m for _, m in runner.model.named_modules()]
    for m in modules:
        if isinstance(m, Linear):
            counting(m, linear(m))
        elif isinstance(m, LoRALinear):
            counting(m, lora(m))
        elif isinstance(m, ScaledDotProductAttention):
            counting(m, attention)
    try:
        with threads(1):
            if isinstance(runner, LMRunner):
                runner.model(batch[:, :-1])
            else:
                runner.model(batch.src, batch.tgt_in)
    finally:
        for m in modules:
            vars(m).pop("forward", None)
    return total[0]


def resident_growth(fn) -> int | None:
    """Bytes by which the process's resident memory peaked above where it stood, while ``fn()``
    ran (Linux: the high-water mark VmHWM, reset through /proc/self/clear_refs); else None."""
    def status(field: str) -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
        raise KeyError(field)
    try:
        Path("/proc/self/clear_refs").write_text("5")
        before = status("VmRSS")
    except (OSError, KeyError):
        return None
    fn()
    return status("VmHWM") - before


def large_benchmark(with_torch, setup, lora: bool, blocks: int) -> dict:
    """A training step at GPT-2 small's shapes, NumPy and PyTorch taking turns, one step a block,
    and each side's growth of resident memory during one step."""
    rank = setup["lora_rank"] if lora else None
    runs = [LMRunner(**setup["sizes"], lora_rank=rank)]
    if with_torch:
        runs.append(TorchLMRunner(**setup["sizes"], lora_rank=rank))
    rng = np.random.default_rng(3)
    batches = [rng.integers(0, setup["sizes"]["vocab_size"], (setup["batch_size"], setup["length"] + 1))
               for _ in range(2)]
    out = interleaved(runs, "step", batches, warmup=1, blocks=blocks, per_block=1)
    for r in runs:
        batch = r.convert(batches[0])
        out[r.name]["resident_growth_bytes"] = resident_growth(lambda: r.step(batch))
    out["flops"] = step_flops(runs[0], batches[0])
    out["trainable_parameters"] = runs[0].model.num_parameters(trainable_only=True)
    return out


# ---- memory ----------------------------------------------------------------------------------


def _arrays(value):
    if isinstance(value, np.ndarray):
        yield value
    elif isinstance(value, (tuple, list)):
        for v in value:
            yield from _arrays(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _arrays(v)


def _owner(a: np.ndarray) -> np.ndarray:
    while isinstance(a.base, np.ndarray):
        a = a.base
    return a


def numpy_cache_bytes(model: Module) -> int:
    """Bytes of every array reachable from a module's ``.cache``, each memory block counted once
    (views such as the heads of q, k, v count as the array they view)."""
    owners = {}
    for _, m in model.named_modules():
        for a in _arrays(m.cache):
            o = _owner(a)
            owners[id(o)] = o.nbytes
    return sum(owners.values())


def memory_benchmark(runs, batch) -> dict:
    out = {}
    for r in runs:
        b = r.convert(batch)
        r.step(b)                                              # warm: Adam's moments exist
        if isinstance(r, NumpyRunner):
            r.model.zero_grad()
            r.crit(r.model(batch.src, batch.tgt_in), batch.labels)
            cache = numpy_cache_bytes(r.model)
            tracemalloc.start()
            base = tracemalloc.get_traced_memory()[0]
            r.step(b)
            peak = tracemalloc.get_traced_memory()[1] - base
            tracemalloc.stop()
            state = sum(p.nbytes for p in r.model.parameters()) * 4       # params, grads, 2 moments
            out[r.name] = {"peak_step_bytes": peak, "cache_bytes": cache, "param_state_bytes": state}
        else:
            storages = {}

            def pack(t):
                storage = t.untyped_storage()
                storages[storage.data_ptr()] = storage.nbytes()
                return t

            with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                r.loss_fn(r.model(*b[:2]), b[2])
            state = sum(p.numel() * p.element_size() for p in r.model.parameters()) * 4
            out[r.name] = {"peak_step_bytes": None, "cache_bytes": sum(storages.values()),
                           "param_state_bytes": state}
    return out


# ---- decoding --------------------------------------------------------------------------------


def torch_decode_runs(model):
    """peer(src, length) -> {use_cache: a run of PyTorch's greedy decoding} (measure_decode's peer)."""
    def runs(src: np.ndarray, length: int) -> dict:
        src_t = torch.from_numpy(src)
        return {use_cache: (lambda use_cache=use_cache: torch_reference.greedy_decode(
                    model, src_t, length, use_cache, stop_at_eos=False))
                for use_cache in (True, False)}
    return runs


def decode_benchmark(with_torch, lengths, batch, repeats) -> dict:
    """NumPy's greedy decoding beside PyTorch's on the same sources, their runs taking turns."""
    from decode_bench import N_SYMBOLS as DECODE_SYMBOLS, measure_decode
    peer = torch_decode_runs(torch_reference.build(Vocab(DECODE_SYMBOLS).size)[0]) if with_torch else None
    numpy_result = measure_decode(lengths=lengths, batch=batch, repeats=repeats, peer=peer)
    rows = []
    for row in numpy_result["rows"]:
        sides = {"NumPy": {"cached_s": row["cached_s"], "uncached_s": row["uncached_s"]}}
        if with_torch:
            sides["PyTorch"] = {"cached_s": row["peer_cached_s"], "uncached_s": row["peer_uncached_s"]}
        for side in sides.values():
            side["speedup"] = side["uncached_s"] / side["cached_s"]
        rows.append({"length": row["length"], **sides})
    return {"batch": batch, "repeats": repeats, "rows": rows}


# ---- the machine -----------------------------------------------------------------------------


def machine_info(threads: int, with_torch: bool) -> dict:
    import scipy
    info = {"cpu": cpu_name(), "cpu_count": os.cpu_count(), "python": platform.python_version(),
            "numpy": np.__version__, "scipy": scipy.__version__, "threads": threads,
            # what BLAS starts with; tinytransformer.threads holds it to one thread while it computes
            "blas_threads_outside": [lib["num_threads"] for lib in threadpool_info()
                                     if lib["user_api"] == "blas"],
            "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        info["numpy_blas"] = f"{blas.get('name')} {blas.get('version')}"
    except Exception:        # the layout of show_config differs between NumPy versions
        pass
    measured_at = commit()       # the commit measured (and whether the working tree differed from it)
    if measured_at:
        info["commit"] = measured_at
    if with_torch:
        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
    return info


# ---- reporting -------------------------------------------------------------------------------


def _ratio(a, b) -> str:
    return f"{a / b:.2f}" if a is not None and b else "-"


def _ms(seconds) -> str:
    return "-" if seconds is None else f"{1e3 * seconds:.1f}"


def _mb(n) -> str:
    return "n/a" if n is None else f"{n / 2**20:.1f}"


def markdown(results: dict) -> str:
    """benchmarks/results/README.md: a title over the tables."""
    title = "# Benchmark results" + (" (quick mode: tiny, not for quoting)" if results["quick"] else "")
    return title + "\n\n" + tables(results)


def beside_pytorch(has_torch: bool):
    """(header, row) of a table with NumPy beside PyTorch and their ratio (NumPy alone without
    torch); ``row(label, numpy_value, torch_value, fmt=_ms, ratio=True)`` is one line of it."""
    def row(label, numpy_value, torch_value, fmt=_ms, ratio=True):
        cells = [label, fmt(numpy_value)]
        if has_torch:
            cells += [fmt(torch_value), _ratio(numpy_value, torch_value) if ratio else "-"]
        return "| " + " | ".join(cells) + " |"

    header = ["| | NumPy | PyTorch | NumPy / PyTorch |", "|---|---:|---:|---:|"] if has_torch else \
        ["| | NumPy |", "|---|---:|"]
    return header, row


def tables(results: dict) -> str:
    """Every table of a benchmark run, under the line that states its machine, versions and commit."""
    has_torch = "PyTorch" in results["step"]["step"]
    lines = [machine_line(results, has_torch), "", f"Reproduce: `{results['command']}`", ""]
    if "same_model_check" in results:
        c = results["same_model_check"]
        lines += [f"Same model: given the NumPy weights, the PyTorch model's logits differ by at most "
                  f"{c['max_abs_logit_difference']:.1e} (loss {c['numpy_loss']:.6f} vs {c['torch_loss']:.6f}).", ""]

    header, row = beside_pytorch(has_torch)
    s = results["step"]
    setup = results["setup"]
    lines += ["### Training step, " + ("the tiny --quick configuration" if results["quick"] else
                                       "reference configuration"), "",
              f"{setup['sizes']}, batch {setup['batch_size']}, lengths 1..{setup['max_len']} (mean "
              f"{s['tokens_per_batch']:.0f} target tokens per batch), float32, median over interleaved "
              "blocks after warm-up. Ratio below 1: NumPy is faster.", ""] + header
    for method, label in (("step", "training step (ms)"), ("forward_backward", "forward + loss + backward (ms)")):
        lines.append(row(label, s[method]["NumPy"]["median_s"], s[method].get("PyTorch", {}).get("median_s")))
    if "NumPy, one thread" in s["step"]:
        lines.append(row("training step, one thread each (ms)", s["step"]["NumPy, one thread"]["median_s"],
                         s["step"].get("PyTorch, one thread", {}).get("median_s")))
    for method, label in (("step", "training step, CPU time of the process (ms)"),):
        lines.append(row(label, s[method]["NumPy"]["cpu_median_s"],
                         s[method].get("PyTorch", {}).get("cpu_median_s")))
    if "flops" in s:
        peak = results["peak"]["gflops"] * 1e9
        lines.append(row("share of the matrix-product peak", s["flops"] / s["step"]["NumPy"]["median_s"] / peak,
                         s["flops"] / s["step"]["PyTorch"]["median_s"] / peak if has_torch else None,
                         fmt=_percent, ratio=False))
    lines.append(row("training tokens / s", s["step"]["NumPy"]["tokens_per_s"],
                     s["step"].get("PyTorch", {}).get("tokens_per_s"), fmt=lambda v: f"{v:,.0f}" if v else "-",
                     ratio=False))

    lines += ["", "#### The phases of a step (median ms)", ""] + header
    for phase in results["phases"]["NumPy"]:
        lines.append(row(phase, results["phases"]["NumPy"][phase], results["phases"].get("PyTorch", {}).get(phase)))

    lines += ["", "#### Where the NumPy step goes", "",
              "Each module's forward and backward, exclusive of its children, summed by layer type "
              "(timing wrappers add a little overhead). Measured on one thread, the gradient worker "
              "off, so every layer's parameter gradients count in its own backward.", "", "| part | ms / step | share |", "|---|---:|---:|"]
    for r in results["layers"]["NumPy"]:
        lines.append(f"| {r['part']} | {r['ms']:.2f} | {100 * r['share']:.0f}% |")
    if "PyTorch" in results["layers"]:
        lines += ["", "PyTorch's top operators by self CPU time (torch.profiler; adds overhead):", "",
                  "| operator | ms / step | share | calls / step |", "|---|---:|---:|---:|"]
        for r in results["layers"]["PyTorch"]:
            lines.append(f"| {r['op']} | {r['ms']:.2f} | {100 * r['share']:.0f}% | {r['calls_per_step']:.0f} |")

    d = results["decode"]
    lines += ["", f"### Greedy decoding, {d['batch']} sequences (median seconds of {d['repeats']}, "
              f"the two sides taking turns)", ""]
    if has_torch:
        lines += ["| length | NumPy cached | NumPy uncached | NumPy speedup | PyTorch cached | PyTorch uncached "
                  "| PyTorch speedup | cached NumPy / PyTorch |", "|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in d["rows"]:
            n, t = r["NumPy"], r["PyTorch"]
            lines.append(f"| {r['length']} | {n['cached_s']:.3f} | {n['uncached_s']:.3f} | {n['speedup']:.1f}x "
                         f"| {t['cached_s']:.3f} | {t['uncached_s']:.3f} | {t['speedup']:.1f}x "
                         f"| {n['cached_s'] / t['cached_s']:.2f} |")
    else:
        lines += ["| length | cached | uncached | speedup |", "|---:|---:|---:|---:|"]
        for r in d["rows"]:
            n = r["NumPy"]
            lines.append(f"| {r['length']} | {n['cached_s']:.3f} | {n['uncached_s']:.3f} | {n['speedup']:.1f}x |")

    sc = results["scaling"]
    for key, label, note in (("length", "sequence length", "every sequence of this length, d_model 64"),
                             ("d_model", "d_model", "d_ff = 4 d_model, 4 heads, lengths 1..16")):
        lines += ["", f"### Step time against {label} (median ms; {note})", "",
                  f"| {label} | NumPy |" + (" PyTorch | NumPy / PyTorch |" if has_torch else ""),
                  "|---:|---:|" + ("---:|---:|" if has_torch else "")]
        for r in sc[key]:
            lines.append(f"| {r[key]} | {_ms(r['NumPy'])} |" +
                         (f" {_ms(r['PyTorch'])} | {_ratio(r['NumPy'], r['PyTorch'])} |" if has_torch else ""))

    mem = results["memory"]
    lines += ["", "### Memory of a training step (MB)", "",
              "Peak: tracemalloc's peak of NumPy allocations during one step, above what was allocated "
              "before it (PyTorch's allocations are invisible to tracemalloc: n/a). Held between forward "
              "and backward: every array in a module's cache / every tensor autograd saves, each "
              "memory block once.", ""] + header
    for key, label in (("peak_step_bytes", "peak during a step"), ("cache_bytes", "held between forward and backward"),
                       ("param_state_bytes", "parameters, gradients, Adam moments")):
        lines.append(row(label, mem["NumPy"][key], mem.get("PyTorch", {}).get(key), fmt=_mb,
                         ratio=key != "peak_step_bytes"))

    lines += ["", "### Notes", "",
              "- Wall-clock medians; NumPy and PyTorch run in the same process, with the same batches and "
              "thread count, taking turns in blocks, so a change of machine load hits both.",
              "- PyTorch side (benchmarks/torch_reference.py): the same architecture in torch.nn modules, "
              "eager mode, attention through `F.scaled_dot_product_attention` (PyTorch's fused CPU kernel), "
              "`torch.optim.Adam` with its defaults apart from betas and eps.",
              "- Threads: `--threads N` (default 2) for each side. PyTorch: `torch.set_num_threads(N)`. "
              "NumPy: one BLAS thread (on a busy machine BLAS threads that find no free core slow a "
              "small step down several times over) and, from N = 2, the worker thread that computes the "
              "parameter gradients while backward goes on (`tinytransformer/nn/overlap.py`); a large model "
              "call spreads over the threads instead: a training call of 7e8 multiply-adds or more by a "
              "model under 2e7 weights splits its batch, the model computing one part and a replica of it "
              "each other, each on a thread of its own (`tinytransformer/nn/batch_split.py`: the scaling "
              "rows from length 64 and from d_model 128 to 512), any other call of 1e9 or more puts every "
              "product on all threads (`threads.products_shared`: the GPT-2 shapes, d_model 768); "
              "`benchmarks/sharing.py` times the three ways.",
              "- Tokens are target tokens (non-PAD labels), the ones the loss counts.",
              "- Figure: figures/benchmark_scaling.png."]
    return "\n".join(lines) + "\n"


NUMPY_THREADS = ("the parameter-gradient worker beside one BLAS thread; the batch split over both "
                 "threads for a training call of 7e8 multiply-adds or more by a model under 2e7 weights, "
                 "both threads in BLAS for any other call of 1e9 or more")


def machine_line(results: dict, with_torch: bool) -> str:
    """The sentence that states the machine, versions, commit, threads and load of a run."""
    m = results["machine"]
    return (stated(f"{m['cpu']}, {m['cpu_count']} cores, Python {m['python']}, NumPy {m['numpy']}"
                   + (f" ({m['numpy_blas']})" if "numpy_blas" in m else "")
                   + (f", PyTorch {m['torch']}" if with_torch else ""), m.get("commit"))
            + f" {m['threads']} thread(s) for NumPy" + (" and PyTorch" if with_torch else "")
            + (f" (NumPy: {NUMPY_THREADS})" if m["threads"] >= 2 else "")
            + (f"; load average at the start {m['load_average'][0]:.2f}" if m.get("load_average") else "")
            + (f", at the end {m['load_average_end'][0]:.2f}" if m.get("load_average_end") else "")
            + ".")


def large_markdown(results: dict) -> str:
    """large.md: the GPT-2-shape steps, the matrix-product peak and each step's share of it."""
    has_torch = "PyTorch" in results["large"]["full"]

    header, row = beside_pytorch(has_torch)
    lines = [machine_line(results, has_torch), "", f"Reproduce: `{results['command']}`"]
    return "\n".join(lines + large_tables(results, header, row)) + "\n"


def large_tables(results: dict, header: list, row) -> list[str]:
    """The GPT-2-shape steps, the matrix-product peak and each step's share of it."""
    large, peak = results["large"], results["peak"]
    setup = large["setup"]
    sizes = setup["sizes"]
    lines = ["", "### Training step at GPT-2 small's shapes" + (" (--quick: a tiny stand-in)" if results["quick"]
                                                                else ""), "",
             f"DecoderOnlyTransformer: {sizes['n_layers']} layers, d_model {sizes['d_model']}, "
             f"{sizes['n_heads']} heads, d_ff {sizes['d_ff']}, vocabulary {sizes['vocab_size']}, learned "
             f"positions, tanh GELU, tied embeddings, random weights; batch {setup['batch_size']} of "
             f"{setup['length']} tokens; AdamW (PyTorch's fused). LoRA: rank {setup['lora_rank']} on w_q "
             f"and w_v, everything else frozen. Median seconds of {len(large['full']['NumPy']['samples_s'])} "
             f"steps each, the two taking turns step by step, after one untimed. Resident growth: how far "
             f"the process's resident memory rose above where it stood during one step. Share of the peak: "
             f"the step's matrix-product FLOPs ({large['full']['flops'] / 1e9:.3g} G full, "
             f"{large['lora']['flops'] / 1e9:.3g} G LoRA, counted from the shapes) per second, over the "
             f"machine's float32 product peak measured in this run ({peak['gflops']:.0f} GFLOP/s: one "
             f"{peak['n']} x {peak['n']} product, BLAS on {peak['threads']} threads).", ""] + header
    for kind, label in (("full", "full training step (s)"), ("lora", "LoRA training step (s)")):
        got = large[kind]
        lines.append(row(label, got["NumPy"]["median_s"], got.get("PyTorch", {}).get("median_s"), fmt=_s))
    for kind, label in (("full", "full step: resident growth (MB)"), ("lora", "LoRA step: resident growth (MB)")):
        got = large[kind]
        lines.append(row(label, got["NumPy"]["resident_growth_bytes"],
                         got.get("PyTorch", {}).get("resident_growth_bytes"), fmt=_mb))
    for kind, label in (("full", "full step: share of the matrix-product peak"),
                        ("lora", "LoRA step: share of the matrix-product peak")):
        got = large[kind]
        share = {name: got["flops"] / got[name]["median_s"] / (peak["gflops"] * 1e9)
                 for name in ("NumPy", "PyTorch") if name in got}
        lines.append(row(label, share["NumPy"], share.get("PyTorch"), fmt=_percent, ratio=False))
    return lines


def _s(seconds) -> str:
    return "-" if seconds is None else f"{seconds:.2f}"


def _percent(share) -> str:
    return "-" if share is None else f"{100 * share:.3g}%"


# how the before-and-after breakdown groups layer_breakdown's parts; the rest is "everything else"
BREAKDOWN_GROUPS = {
    "Linear backward": ["Linear backward"],
    "Linear forward": ["Linear forward"],
    "attention (scores, softmax, weights) backward": ["ScaledDotProductAttention backward"],
    "attention forward": ["ScaledDotProductAttention forward"],
    "LayerNorm backward": ["LayerNorm backward"],
    "LayerNorm forward": ["LayerNorm forward"],
    "Adam update": ["Adam update"],
    "head split and merge, both ways": ["MultiHeadAttention forward", "MultiHeadAttention backward"],
    "ReLU, both ways": ["ReLU forward", "ReLU backward"],
    "model glue (masks, embedding scale, residual sums)": ["model glue (masks, embedding scale, residual sums)"],
}


def before_after_table(saved: dict) -> str:
    """layers_before_after.md: two checkouts' per-layer breakdowns side by side, grouped."""
    before, after = saved["before"], saved["after"]
    lines = [stated(saved["machine"], f"{before['commit']} (before) and {after['commit']} (now)")
             + f" What: {saved['what']}.", "",
             "| part | before (ms) | now (ms) |", "|---|---:|---:|"]
    for label, parts in BREAKDOWN_GROUPS.items():
        lines.append(f"| {label} | {sum(before['ms'][p] for p in parts):.2f} "
                     f"| {sum(after['ms'][p] for p in parts):.2f} |")
    grouped = {p for parts in BREAKDOWN_GROUPS.values() for p in parts}
    rest = [sum(v for p, v in side["ms"].items() if p not in grouped) for side in (before, after)]
    lines.append(f"| everything else (embedding, loss, zero_grad, ...) | {rest[0]:.2f} | {rest[1]:.2f} |")
    lines.append(f"| **total** | **{sum(before['ms'].values()):.1f}** | **{sum(after['ms'].values()):.1f}** |")
    return "\n".join(lines) + "\n"


def write_markdown(results: dict, out_dir: Path) -> str:
    """README.md (titled) and benchmark.md (the tables alone, which docs/performance.md includes)."""
    text = markdown(results)
    (out_dir / "README.md").write_text(text)
    (out_dir / "benchmark.md").write_text(tables(results))
    print(f"wrote {out_dir / 'README.md'} and {out_dir / 'benchmark.md'}", file=sys.stderr)
    return text


def write_large(results: dict, out_dir: Path) -> str:
    """large.json (the peak and the GPT-2-shape steps, with the machine) and large.md."""
    large = {key: results[key] for key in ("quick", "command", "machine", "peak", "large")}
    (out_dir / "large.json").write_text(json.dumps(large, indent=1) + "\n")
    text = large_markdown(large)
    (out_dir / "large.md").write_text(text)
    print(f"wrote {out_dir / 'large.json'} and {out_dir / 'large.md'}", file=sys.stderr)
    return text


def measure_large(results: dict, with_torch: bool, quick: bool, say) -> None:
    """The matrix-product peak and the GPT-2-shape steps, into ``results``."""
    say("matrix-product peak ...")
    results["peak"] = matmul_peak(256 if quick else 2048, repeats=2 if quick else 5)
    say("GPT-2 small's shapes: full and LoRA training steps ...")
    large = GPT2_QUICK if quick else GPT2
    results["large"] = {"setup": large,
                        "full": large_benchmark(with_torch, large, lora=False, blocks=1 if quick else 3),
                        "lora": large_benchmark(with_torch, large, lora=True, blocks=1 if quick else 3)}


def plot_scaling(results: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    from matplotlib.ticker import LogLocator, ScalarFormatter
    sc = results["scaling"]
    fig = Figure(figsize=(10, 4.2), dpi=120)
    for ax, key, label in ((fig.add_subplot(1, 2, 1), "length", "sequence length (d_model 64)"),
                           (fig.add_subplot(1, 2, 2), "d_model", "d_model (d_ff = 4 d_model, lengths 1..16)")):
        xs = [r[key] for r in sc[key]]
        for side, style in (("NumPy", "o-"), ("PyTorch", "s--")):
            if sc[key] and side in sc[key][0]:
                ax.plot(xs, [1e3 * r[side] for r in sc[key]], style, label=f"{side}")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(xs, [str(x) for x in xs])
        ax.yaxis.set_major_formatter(ScalarFormatter())          # 200, not 2 x 10^2
        ax.yaxis.set_minor_locator(LogLocator(base=10, subs=(2, 3, 5)))
        ax.yaxis.set_minor_formatter(ScalarFormatter())
        ax.set_xlabel(label)
        ax.set_ylabel("ms per training step (median)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    m = results["machine"]
    fig.suptitle(f"Training step, batch 64, float32: {m['cpu']}, {m['threads']} thread(s)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)


# ---- main ------------------------------------------------------------------------------------


def set_threads(n: int) -> None:
    """n threads each: PyTorch's own; for NumPy, from 2 on, the parameter-gradient worker."""
    NumpyRunner.numpy_threads = n
    if torch is not None:
        torch.set_num_threads(n)


def main(args: argparse.Namespace) -> dict:
    with_torch = torch is not None and not args.no_torch
    if args.threads < 1:
        raise SystemExit(f"--threads: expected a number >= 1, got {args.threads}")
    set_threads(args.threads)
    if args.reference_runs:
        import reference_runs
        return reference_runs.main(reference_runs.parse_args(
            ["--seeds", *map(str, args.seeds), "--threads", str(args.threads)]
            + ([] if with_torch else ["--no-torch"])))
    if args.table:
        out_dir = Path(args.out) if args.out else HERE / "results"
        results = json.loads((out_dir / "benchmark.json").read_text())
        write_markdown(results, out_dir)
        if (out_dir / "large.json").is_file():
            large = json.loads((out_dir / "large.json").read_text())
            (out_dir / "large.md").write_text(large_markdown(large))
        saved = out_dir / "layers_before_after.json"        # written by hand from two checkouts' runs
        if saved.is_file():
            saved.with_suffix(".md").write_text(before_after_table(json.loads(saved.read_text())))
        return results
    q = args.quick
    # --quick writes to a temporary directory unless told: it must never replace real results
    out_dir = Path(args.out) if args.out else \
        (Path(tempfile.gettempdir()) / "tinytransformer-bench-quick" if q else HERE / "results")
    figure = Path(args.figure) if args.figure else \
        (out_dir / "benchmark_scaling.png" if q else ROOT / "figures" / "benchmark_scaling.png")
    command = "python benchmarks/run.py" + (" --quick" if q else "") + (" --large" if args.large else "") + \
        (f" --threads {args.threads}" if args.threads != 2 else "")
    results = {"quick": q, "command": command, "machine": machine_info(args.threads, with_torch)}
    say = (lambda text: print(text, file=sys.stderr, flush=True))
    if args.large:
        measure_large(results, with_torch, q, say)
        results["machine"]["load_average_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
        out_dir.mkdir(parents=True, exist_ok=True)
        print(write_large(results, out_dir))
        return results

    setup = QUICK if q else REFERENCE
    results["setup"] = setup
    batches = reference_batches(4 if q else 20, max_len=setup["max_len"], batch_size=setup["batch_size"])
    runs = runners(with_torch, **setup["sizes"])
    if with_torch:
        results["same_model_check"] = same_model_check(batches[0], **setup["sizes"])
    say("training step ...")
    step_runs = runs
    if args.threads != 1:     # also with one thread each, all four taking turns
        one_thread = runners(with_torch, **setup["sizes"])
        for r in one_thread:
            r.name, r.threads = f"{r.name}, one thread", 1
        for r in runs:
            r.threads = args.threads
        step_runs = runs + one_thread
    results["step"] = step_benchmark(step_runs, batches, warmup=1 if q else 10, blocks=2 if q else 10,
                                     per_block=2 if q else 10)
    for r in runs:
        r.threads = None
    set_threads(args.threads)
    say("phases and per-layer breakdown ...")
    results["phases"] = phase_benchmark(runs, batches, repeats=3 if q else 50)
    results["layers"] = {"NumPy": layer_breakdown(runs[0], batches, warmup=1, repeats=2 if q else 30)}
    if with_torch:
        results["layers"]["PyTorch"] = torch_top_ops(runs[1], batches, warmup=1, repeats=2 if q else 20)
    say("memory ...")
    results["memory"] = memory_benchmark(runs, batches[0])
    say("decoding ...")
    results["decode"] = decode_benchmark(with_torch, lengths=(4,) if q else (16, 32, 64),
                                         batch=setup["batch_size"], repeats=1 if q else 5)
    measure_large(results, with_torch, q, say)
    results["step"]["flops"] = float(np.mean([step_flops(runs[0], b) for b in batches]))
    say("scaling ...")
    results["scaling"] = scaling(with_torch, lengths=(4,) if q else (16, 32, 64, 128, 256, 512),
                                 d_models=(8,) if q else (32, 64, 128, 256, 512, 768),
                                 warmup=1 if q else 2, blocks=1 if q else 5, per_block=1 if q else 2,
                                 sizes=setup["sizes"], batch_size=setup["batch_size"])
    results["machine"]["load_average_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "benchmark.json").write_text(json.dumps(results, indent=1) + "\n")
    text = write_markdown(results, out_dir)
    write_large(results, out_dir)
    plot_scaling(results, figure)
    print(text)
    say(f"wrote {out_dir / 'benchmark.json'}, {out_dir / 'README.md'} and {figure}")
    return results


if __name__ == "__main__":
    main(parse_args())
