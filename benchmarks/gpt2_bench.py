"""GPT-2-small's shapes in NumPy beside transformers' GPT-2 in PyTorch eager, on the same weights.

    python benchmarks/gpt2_bench.py            # GPT-2-small shapes (a quarter of an hour on 2 cores)
    python benchmarks/gpt2_bench.py --quick    # tiny shapes, seconds: a smoke test (tests/test_benchmarks.py)
    python benchmarks/gpt2_bench.py --table    # only write the Markdown again from the saved JSON

The model: 12 layers, d_model 768, 12 heads, vocabulary 50257, 1024 positions, random
weights (speed does not depend on what the weights are). transformers builds it
(``GPT2LMHeadModel(GPT2Config(...))``, dropout 0) and ``save_pretrained`` writes it as a Hugging
Face folder into a temporary directory; both sides load that folder, so they hold the same
numbers: ours with ``load_pretrained``, theirs with ``GPT2LMHeadModel.from_pretrained``
(``attn_implementation="sdpa"``: PyTorch's fused attention). What is measured:

- loading: seconds and the growth of the process's peak resident memory (``ru_maxrss``), each
  side in a fresh subprocess, imports done before the clock starts;
- cached generation: greedy, 128 new tokens after a 32-token random prompt, batch 1 and 8 (ours:
  ``tinytransformer.generate`` with the KV cache; theirs: ``model.generate`` with ``use_cache``),
  tokens per second, and how many leading tokens of each row the two agree on (float32 on both
  sides: near-ties of random logits may break differently, so agreement is reported, not required);
- a full training step (forward, cross-entropy, backward, AdamW) at batch 4, block 256, and a
  LoRA step (rank 8 on the attention's query and value projections, ``add_lora``'s default
  targets, the LoRA paper's; theirs: the hand-written ``LoRAQV`` wrapper below around
  ``c_attn``, which holds q, k and v in one matrix; peft is not used), the median of several
  steps, the two sides taking turns;
- the peak memory of full fine-tuning: each side in a fresh subprocess, the growth of peak
  resident memory over two full steps (model, gradients, AdamW state, activations);
- the machine's single-precision matrix-product peak: one large float32 product on all cores,
  in NumPy and in PyTorch, and the fraction of the larger one each step reaches. A full step's
  FLOPs are counted as 6 * parameters * tokens + 12 * layers * batch * block^2 * d_model
  (attention's two products, forward and backward); a LoRA step's as 4 * parameters * tokens +
  the same attention term (no weight gradients of the frozen matrices).

Both sides compute with the same threads (``--threads``, default 2): PyTorch through
``torch.set_num_threads``, NumPy through ``tinytransformer.threads``. NumPy is imported first
and no thread variable is set. The load average is recorded with every measurement: the numbers
of a shared machine are only comparable at a similar load.

Results: ``benchmarks/results/gpt2.json`` and ``benchmarks/results/gpt2.md`` (the table that
docs/pretrained.md includes). ``--quick`` writes to ``--out`` only (default: a temporary directory).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np  # noqa: I001  (NumPy first, as a learner imports it)

import torch
import torch.nn.functional as F
import transformers
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from machine import commit, describe, stated  # noqa: E402
from tinytransformer import AdamW, add_lora, generate, load_pretrained, threads  # noqa: E402
from tinytransformer.nn.loss import CrossEntropyLoss  # noqa: E402

RESULTS = HERE / "results"
transformers.logging.disable_progress_bar()
FULL = dict(n_layer=12, n_embd=768, n_head=12, vocab_size=50257, n_positions=1024,
            batch=4, block=256, prompt=32, new_tokens=128, gen_batches=(1, 8), repeats=3,
            lora_rank=8, matmul_n=4096)
QUICK = dict(n_layer=2, n_embd=32, n_head=2, vocab_size=300, n_positions=64,
             batch=2, block=16, prompt=4, new_tokens=8, gen_batches=(1, 2), repeats=1,
             lora_rank=4, matmul_n=256)
LR, BETAS, EPS, WEIGHT_DECAY = 1e-4, (0.9, 0.999), 1e-8, 0.01


def load_average() -> float:
    return os.getloadavg()[0]


def peak_rss_bytes() -> int:
    """The process's peak resident memory so far (Linux gives ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def write_folder(shapes: dict, folder: Path) -> None:
    """A random GPT-2 of these shapes, as transformers writes it (config.json + model.safetensors)."""
    torch.manual_seed(0)
    config = GPT2Config(n_layer=shapes["n_layer"], n_embd=shapes["n_embd"], n_head=shapes["n_head"],
                        vocab_size=shapes["vocab_size"], n_positions=shapes["n_positions"],
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                        bos_token_id=shapes["vocab_size"] - 1, eos_token_id=shapes["vocab_size"] - 1)
    GPT2LMHeadModel(config).save_pretrained(folder)


def load_theirs(folder) -> GPT2LMHeadModel:
    return GPT2LMHeadModel.from_pretrained(folder, attn_implementation="sdpa", dtype=torch.float32)


# ---- the PyTorch side of LoRA ----------------------------------------------------------------


class LoRAQV(nn.Module):
    """GPT-2's c_attn (x @ W + b, W (D, 3D): q, k, v side by side) with LoRA on q and v only:

        [q | k | v] = x @ W + b + (alpha / r) * [x @ A_q @ B_q | 0 | x @ A_v @ B_v]

    A (D, r) drawn as our LoRALinear draws it (uniform, Kaiming's bound), B (r, D) zero, so the
    wrapped layer starts equal to c_attn; c_attn's own weight and bias are frozen."""

    def __init__(self, c_attn: nn.Module, rank: int, alpha: float):
        super().__init__()
        self.c_attn, self.scaling = c_attn, alpha / rank
        d = c_attn.weight.shape[0]
        bound = 1.0 / np.sqrt(d)
        self.a_q, self.a_v = (nn.Parameter(torch.empty(d, rank).uniform_(-bound, bound)) for _ in range(2))
        self.b_q, self.b_v = (nn.Parameter(torch.zeros(rank, d)) for _ in range(2))

    def forward(self, x):                                                # x: (B, T, D)
        qkv = self.c_attn(x)                                             # (B, T, 3D)
        q, k, v = qkv.split(qkv.shape[-1] // 3, dim=-1)
        q = q + self.scaling * (x @ self.a_q) @ self.b_q
        v = v + self.scaling * (x @ self.a_v) @ self.b_v
        return torch.cat([q, k, v], dim=-1)


def add_lora_theirs(model: GPT2LMHeadModel, rank: int) -> list[nn.Parameter]:
    """Freeze the model, wrap every block's c_attn in LoRAQV; returns the adapters' parameters."""
    model.requires_grad_(False)
    for block in model.transformer.h:
        block.attn.c_attn = LoRAQV(block.attn.c_attn, rank, alpha=float(rank))
    return [p for p in model.parameters() if p.requires_grad]


# ---- one training step on each side ---------------------------------------------------------


class Ours:
    name = "NumPy"

    def __init__(self, folder, n_threads: int):
        self.model, self.n_threads = load_pretrained(folder), n_threads
        self.crit = CrossEntropyLoss()

    def optimizer(self) -> None:
        self.opt = AdamW(self.model, lr=LR, betas=BETAS, eps=EPS, weight_decay=WEIGHT_DECAY)

    def lora(self, rank: int) -> None:
        add_lora(self.model, rank, rng=np.random.default_rng(0))
        self.optimizer()

    def step(self, ids: np.ndarray, labels: np.ndarray) -> float:
        with threads(self.n_threads):
            self.model.zero_grad()
            loss = self.crit(self.model(ids), labels)
            self.model.backward(self.crit.backward())
            self.opt.step()
        return float(loss)

    def generate(self, prompt: np.ndarray, new_tokens: int) -> np.ndarray:
        with threads(self.n_threads):
            return generate(self.model, prompt, new_tokens, use_cache=True, stop_at_eos=False)


class Theirs:
    name = "PyTorch"

    def __init__(self, folder):
        self.model = load_theirs(folder)

    def optimizer(self, params=None) -> None:
        params = list(self.model.parameters()) if params is None else params
        self.opt = torch.optim.AdamW(params, lr=LR, betas=BETAS, eps=EPS, weight_decay=WEIGHT_DECAY,
                                     fused=True)

    def lora(self, rank: int) -> None:
        self.model.zero_grad(set_to_none=True)          # the full steps' gradients go
        self.optimizer(add_lora_theirs(self.model, rank))

    def step(self, ids: np.ndarray, labels: np.ndarray) -> float:
        self.model.train()
        self.opt.zero_grad(set_to_none=True)
        logits = self.model(torch.from_numpy(ids)).logits                          # (B, T, V)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), torch.from_numpy(labels).reshape(-1))
        loss.backward()
        self.opt.step()
        return loss.item()

    @torch.no_grad()
    def generate(self, prompt: np.ndarray, new_tokens: int) -> np.ndarray:
        self.model.eval()
        mask = torch.ones(prompt.shape, dtype=torch.long)
        out = self.model.generate(torch.from_numpy(prompt), attention_mask=mask, max_new_tokens=new_tokens,
                                  min_new_tokens=new_tokens, do_sample=False, use_cache=True, pad_token_id=0)
        return out[:, prompt.shape[1]:].numpy()


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def turns(sides, run, repeats: int) -> dict:
    """Each side's run once as a warm-up, then ``repeats`` rounds in which the sides take turns;
    {name: {"median_s", "all_s", "load_average"}} plus the warm-up's values under "value"."""
    out = {}
    for side in sides:
        out[side.name] = {"value": run(side), "all_s": [], "load_average": []}
    for _ in range(repeats):
        for side in sides:
            seconds, _ = timed(lambda: run(side))
            out[side.name]["all_s"].append(seconds)
            out[side.name]["load_average"].append(load_average())
    for side in sides:
        out[side.name]["median_s"] = float(np.median(out[side.name]["all_s"]))
    return out


def leading_agreement(a: np.ndarray, b: np.ndarray) -> list[int]:
    """For each row, how many tokens from the first on are equal in both."""
    differ = a != b                                                    # (B, n)
    return [int(row.argmax()) if row.any() else a.shape[1] for row in differ]


# ---- the matrix-product peak ------------------------------------------------------------------


def matmul_peak(n: int, repeats: int = 3) -> dict:
    """GFLOP/s of one (n, n) @ (n, n) float32 product on all cores, NumPy and PyTorch: 2 n^3 / s."""
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((n, n), dtype=np.float32) for _ in range(2))
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    threads_before = torch.get_num_threads()
    cores = len(os.sched_getaffinity(0))
    torch.set_num_threads(cores)
    result = {"n": n, "cores": cores}
    for name, product in (("NumPy", lambda: a @ b), ("PyTorch", lambda: ta @ tb)):
        product()
        best = min(timed(product)[0] for _ in range(repeats))
        result[name] = {"gflops": 2 * n ** 3 / best / 1e9, "load_average": load_average()}
    torch.set_num_threads(threads_before)
    result["peak_gflops"] = max(result["NumPy"]["gflops"], result["PyTorch"]["gflops"])
    return result


# ---- subprocesses: loading and the memory of full fine-tuning ---------------------------------


def child(what: str, side: str, folder: str, shapes: dict, n_threads: int) -> dict:
    """Run in a fresh process: "load" (seconds, peak-memory growth) or "memory" (two full steps)."""
    torch.set_num_threads(n_threads)
    before = peak_rss_bytes()
    seconds, model_side = timed(lambda: Ours(folder, n_threads) if side == "NumPy" else Theirs(folder))
    out = {"seconds": seconds, "peak_rss_growth_bytes": peak_rss_bytes() - before,
           "load_average": load_average()}
    if what == "memory":
        model_side.optimizer()
        ids, labels = batch(shapes, np.random.default_rng(1))
        for _ in range(2):
            model_side.step(ids, labels)
        out = {"peak_rss_growth_bytes": peak_rss_bytes() - before, "load_average": load_average()}
    return out


def in_subprocess(what: str, side: str, folder: Path, shapes: dict, n_threads: int) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", what, side, str(folder), json.dumps(shapes),
                           "--threads", str(n_threads)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{what} of {side} in a subprocess failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---- the benchmark ----------------------------------------------------------------------------


def batch(shapes: dict, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Random token windows (B, block + 1) split into inputs and next-token labels."""
    tokens = rng.integers(0, shapes["vocab_size"], size=(shapes["batch"], shapes["block"] + 1))
    return tokens[:, :-1].copy(), tokens[:, 1:].copy()


def n_params(shapes: dict) -> int:
    """GPT-2's parameters, the tied head counted once."""
    d, L, V = shapes["n_embd"], shapes["n_layer"], shapes["vocab_size"]
    per_block = 4 * d + (d * 3 * d + 3 * d) + (d * d + d) + (d * 4 * d + 4 * d) + (4 * d * d + d)
    return V * d + shapes["n_positions"] * d + L * per_block + 2 * d


def step_flops(shapes: dict, lora: bool) -> float:
    tokens = shapes["batch"] * shapes["block"]
    attention = 12 * shapes["n_layer"] * shapes["batch"] * shapes["block"] ** 2 * shapes["n_embd"]
    return (4 if lora else 6) * n_params(shapes) * tokens + attention


def run(shapes: dict, n_threads: int, folder: Path) -> dict:
    torch.set_num_threads(n_threads)
    results = {"shapes": shapes, "threads": n_threads, "parameters": n_params(shapes),
               "machine": f"{describe()}, PyTorch {torch.__version__}, "
                          f"transformers {transformers.__version__}",
               "commit": commit(), "platform": platform.platform(), "load_average_start": load_average()}
    results["matmul_peak"] = matmul_peak(shapes["matmul_n"])
    write_folder(shapes, folder)
    results["load"] = {side: in_subprocess("load", side, folder, shapes, n_threads)
                       for side in ("NumPy", "PyTorch")}
    results["memory_full_step"] = {side: in_subprocess("memory", side, folder, shapes, n_threads)
                                   for side in ("NumPy", "PyTorch")}
    sides = [Ours(folder, n_threads), Theirs(folder)]
    rng = np.random.default_rng(0)
    generation = []
    for b in shapes["gen_batches"]:
        prompt = rng.integers(0, shapes["vocab_size"], size=(b, shapes["prompt"]))
        times = turns(sides, lambda side: side.generate(prompt, shapes["new_tokens"]), shapes["repeats"])
        ours, theirs = times["NumPy"].pop("value"), times["PyTorch"].pop("value")
        for side in times.values():
            side["tokens_per_s"] = b * shapes["new_tokens"] / side["median_s"]
        generation.append({"batch": b, **times, "leading_tokens_equal": leading_agreement(ours, theirs)})
    results["generation"] = generation
    ids, labels = batch(shapes, np.random.default_rng(1))
    peak = results["matmul_peak"]["peak_gflops"]
    for kind in ("full", "lora"):
        for side in sides:
            if kind == "lora":
                side.lora(shapes["lora_rank"])
            else:
                side.optimizer()
        times = turns(sides, lambda side: side.step(ids, labels), shapes["repeats"])
        flops = step_flops(shapes, lora=kind == "lora")
        for side in times.values():
            side["first_loss"] = side.pop("value")
            side["fraction_of_peak"] = flops / side["median_s"] / 1e9 / peak
        results[f"{kind}_step"] = {"flops": flops, **times}
    results["load_average_end"] = load_average()
    return results


# ---- the table --------------------------------------------------------------------------------


def _ratio(ours: float, theirs: float) -> str:
    return f"{ours / theirs:.2f}x" if theirs else "-"


def _load_range(*sides: dict) -> str:
    values = [v for side in sides for v in (side["load_average"] if isinstance(side["load_average"], list)
                                             else [side["load_average"]])]
    return f"{min(values):.1f}-{max(values):.1f}"


def markdown(results: dict) -> str:
    s, mb = results["shapes"], 2 ** 20
    peak = results["matmul_peak"]
    lines = [stated(results["machine"], results["commit"]), "",
             f"GPT-2 shapes: {s['n_layer']} layers, d_model {s['n_embd']}, {s['n_head']} heads, vocabulary "
             f"{s['vocab_size']}, {results['parameters'] / 1e6:.1f} M parameters, random weights, float32, "
             f"{results['threads']} threads each; medians of {s['repeats']} after a warm-up, the sides "
             f"taking turns. Matrix-product peak on {peak['cores']} cores ({peak['n']}^2 float32): NumPy "
             f"{peak['NumPy']['gflops']:.0f}, PyTorch {peak['PyTorch']['gflops']:.0f} GFLOP/s.", "",
             "| measurement | NumPy | PyTorch | NumPy / PyTorch | load average |",
             "|---|---:|---:|---:|---:|"]
    ours, theirs = results["load"]["NumPy"], results["load"]["PyTorch"]
    lines.append(f"| load the folder (s) | {ours['seconds']:.2f} | {theirs['seconds']:.2f} "
                 f"| {_ratio(ours['seconds'], theirs['seconds'])} | {_load_range(ours, theirs)} |")
    lines.append(f"| peak memory growth of loading (MB) | {ours['peak_rss_growth_bytes'] / mb:.0f} "
                 f"| {theirs['peak_rss_growth_bytes'] / mb:.0f} "
                 f"| {_ratio(ours['peak_rss_growth_bytes'], theirs['peak_rss_growth_bytes'])} "
                 f"| {_load_range(ours, theirs)} |")
    for row in results["generation"]:
        ours, theirs = row["NumPy"], row["PyTorch"]
        lines.append(f"| generation, batch {row['batch']}, {s['new_tokens']} tokens after {s['prompt']} "
                     f"(tokens/s) | {ours['tokens_per_s']:.1f} | {theirs['tokens_per_s']:.1f} "
                     f"| {_ratio(ours['tokens_per_s'], theirs['tokens_per_s'])} "
                     f"| {_load_range(ours, theirs)} |")
    for kind, label in (("full", "full step"), ("lora", f"LoRA step (rank {s['lora_rank']}, q and v)")):
        step = results[f"{kind}_step"]
        ours, theirs = step["NumPy"], step["PyTorch"]
        lines.append(f"| {label}, batch {s['batch']} x {s['block']} (s) | {ours['median_s']:.2f} "
                     f"| {theirs['median_s']:.2f} | {_ratio(ours['median_s'], theirs['median_s'])} "
                     f"| {_load_range(ours, theirs)} |")
        lines.append(f"| {label}: fraction of the product peak | {ours['fraction_of_peak']:.0%} "
                     f"| {theirs['fraction_of_peak']:.0%} | | |")
    ours, theirs = results["memory_full_step"]["NumPy"], results["memory_full_step"]["PyTorch"]
    lines.append(f"| peak memory growth of full fine-tuning (MB) | {ours['peak_rss_growth_bytes'] / mb:.0f} "
                 f"| {theirs['peak_rss_growth_bytes'] / mb:.0f} "
                 f"| {_ratio(ours['peak_rss_growth_bytes'], theirs['peak_rss_growth_bytes'])} "
                 f"| {_load_range(ours, theirs)} |")
    agree = [f"batch {row['batch']}: {row['leading_tokens_equal']}" for row in results["generation"]]
    lines += ["", f"Generated tokens equal from the first on, per row, of {s['new_tokens']} "
              f"(float32 on both sides: near-ties may break differently): {'; '.join(agree)}. "
              f"First full-step loss: NumPy {results['full_step']['NumPy']['first_loss']:.6f}, "
              f"PyTorch {results['full_step']['PyTorch']['first_loss']:.6f}."]
    return "\n".join(lines) + "\n"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny shapes: a smoke test of seconds")
    parser.add_argument("--threads", type=int, default=2, help="threads for both sides (default 2)")
    parser.add_argument("--out", type=Path, default=None,
                        help="folder for gpt2.json and gpt2.md (default benchmarks/results, or a "
                             "temporary folder with --quick)")
    parser.add_argument("--table", action="store_true", help="only write gpt2.md again from gpt2.json")
    parser.add_argument("--child", nargs=4, metavar=("WHAT", "SIDE", "FOLDER", "SHAPES"),
                        help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(args: argparse.Namespace) -> dict | None:
    if args.child:
        what, side, folder, shapes = args.child
        print(json.dumps(child(what, side, folder, json.loads(shapes), args.threads)))
        return None
    out = args.out or (Path(tempfile.mkdtemp(prefix="gpt2_bench_")) if args.quick else RESULTS)
    if args.table:
        results = json.loads((out / "gpt2.json").read_text())
    else:
        with tempfile.TemporaryDirectory(prefix="gpt2_folder_") as folder:
            results = run(QUICK if args.quick else FULL, args.threads, Path(folder))
        results["quick"] = args.quick
        out.mkdir(parents=True, exist_ok=True)
        (out / "gpt2.json").write_text(json.dumps(results, indent=2) + "\n")
    table = markdown(results)
    (out / "gpt2.md").write_text(table)
    print(table)
    print(f"wrote {out / 'gpt2.json'} and {out / 'gpt2.md'}")
    return results


if __name__ == "__main__":
    main(parse_args())
