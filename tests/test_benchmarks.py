"""Smoke tests of the benchmark entry point in its tiny mode: it runs, and writes what it promises.

No timing is asserted: the numbers depend on the machine and its load.
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from repo_scripts import load_script

ROOT = Path(__file__).resolve().parents[1]
RUN = ROOT / "benchmarks" / "run.py"
HAS_TORCH = importlib.util.find_spec("torch") is not None


def run_quick(out: Path, *extra: str, env: dict | None = None) -> dict:
    proc = subprocess.run([sys.executable, str(RUN), "--quick", "--out", str(out),
                           "--figure", str(out / "scaling.png"), *extra],
                          capture_output=True, text=True, timeout=120, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| training step (ms) |" in proc.stdout
    results = json.loads((out / "benchmark.json").read_text())
    assert (out / "README.md").read_text().startswith("# Benchmark results (quick mode")
    assert (out / "scaling.png").stat().st_size > 0
    assert json.loads((out / "large.json").read_text())["large"] == results["large"]
    return results


def check_numpy_side(results: dict) -> None:
    assert results["quick"] is True
    for method in ("step", "forward_backward"):
        assert results["step"][method]["NumPy"]["median_s"] > 0
    assert results["machine"]["threads"] == 2           # the default: the gradient worker on
    assert results["step"]["step"]["NumPy, one thread"]["median_s"] > 0
    assert set(results["phases"]["NumPy"]) == {"zero_grad", "forward", "loss", "backward", "optimizer"}
    parts = {row["part"] for row in results["layers"]["NumPy"]}
    assert {"Linear forward", "Linear backward", "ScaledDotProductAttention backward"} <= parts
    assert results["memory"]["NumPy"]["cache_bytes"] > 0
    assert results["memory"]["NumPy"]["peak_step_bytes"] > 0
    assert [row["length"] for row in results["decode"]["rows"]] == [4]
    assert results["scaling"]["length"][0]["NumPy"] > 0 and results["scaling"]["d_model"][0]["NumPy"] > 0
    assert results["peak"]["gflops"] > 0 and results["step"]["flops"] > 0
    check_large(results)


def check_large(results: dict) -> None:
    """The GPT-2-shape steps, in their tiny stand-in."""
    assert results["peak"]["gflops"] > 0
    for kind in ("full", "lora"):
        assert results["large"][kind]["NumPy"]["median_s"] > 0
        assert results["large"][kind]["flops"] > 0
    # LoRA trains the adapters only, and its frozen weights need no weight gradient
    assert results["large"]["lora"]["trainable_parameters"] < results["large"]["full"]["trainable_parameters"]
    assert results["large"]["lora"]["flops"] < results["large"]["full"]["flops"]


@pytest.mark.skipif(not HAS_TORCH, reason="PyTorch is not installed (optional)")
def test_quick_run_with_pytorch_beside(tmp_path):
    results = run_quick(tmp_path)
    check_numpy_side(results)
    assert results["step"]["step"]["PyTorch"]["median_s"] > 0
    assert results["large"]["full"]["PyTorch"]["median_s"] > 0 and results["large"]["lora"]["PyTorch"]["median_s"] > 0
    assert "PyTorch" in results["decode"]["rows"][0]
    assert results["memory"]["PyTorch"]["cache_bytes"] > 0
    check = results["same_model_check"]            # the PyTorch model is the same model
    assert check["max_abs_logit_difference"] < 1e-4
    assert abs(check["numpy_loss"] - check["torch_loss"]) < 1e-5


def test_quick_large_run_writes_only_the_large_shapes(tmp_path):
    proc = subprocess.run([sys.executable, str(RUN), "--quick", "--large", "--no-torch", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "large.json").read_text())
    check_large(results)
    assert "### Training step at GPT-2 small's shapes" in (tmp_path / "large.md").read_text()
    assert not (tmp_path / "benchmark.json").exists()


def test_quick_run_without_pytorch(tmp_path):
    # a `torch` module that fails to import stands for PyTorch not being installed
    blocker = tmp_path / "no_torch"
    blocker.mkdir()
    (blocker / "torch.py").write_text("raise ImportError('PyTorch hidden by test_benchmarks')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(blocker), os.environ.get("PYTHONPATH", "")])}
    results = run_quick(tmp_path / "out", env=env)
    check_numpy_side(results)
    assert "PyTorch" not in results["step"]["step"]
    assert "torch" not in results["machine"]


def test_reference_runs_quick(tmp_path):
    """The seed sweep of the reference run, in its tiny mode, NumPy only: JSON, table, figure."""
    out = tmp_path / "rr.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "reference_runs.py"), "--quick",
                           "--no-torch", "--seeds", "0", "1", "--out", str(out),
                           "--figure", str(tmp_path / "rr.png")],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(out.read_text())
    runs = results["runs"]["NumPy"]
    assert [r["seed"] for r in runs] == [0, 1] and "PyTorch" not in results["runs"]
    for r in runs:
        assert r["steps"] == 40 and [e["step"] for e in r["evals"]] == [20, 40]
        assert set(r["fresh"]["by_length"]) == {"1", "2", "3"}
    assert results["summary"]["NumPy"]["runs"] == 2
    assert "| NumPy |" in out.with_suffix(".md").read_text()
    assert (tmp_path / "rr.png").stat().st_size > 0


@pytest.mark.skipif(not HAS_TORCH, reason="the PyTorch peer needs torch (pip install torch==2.13.0)")
def test_the_pytorch_peer_trains_with_the_same_recipe(tmp_path):
    """Same initial weights, batches, loss (label smoothing included) and schedule: the first
    losses agree to float32 rounding (the peer once left label smoothing out, and took ~100
    more steps to solve for it)."""
    out = tmp_path / "rr.json"
    # one thread each: the notebooks run beside the suite (conftest.py), and PyTorch's two threads
    # wait for each other, spinning, when one of them finds no free core
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "reference_runs.py"), "--quick",
                           "--seeds", "0", "--threads", "1", "--out", str(out), "--figure", str(tmp_path / "rr.png")],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = json.loads(out.read_text())["runs"]
    numpy_losses, torch_losses = runs["NumPy"][0]["first_losses"], runs["PyTorch"][0]["first_losses"]
    assert len(numpy_losses) == len(torch_losses) == 5
    assert numpy_losses == pytest.approx(torch_losses, rel=1e-4)


def test_the_fine_tuning_experiment_runs_in_quick_mode(tmp_path):
    script = ROOT / "benchmarks" / "finetune_experiment.py"
    out = tmp_path / "finetune.json"
    proc = subprocess.run([sys.executable, str(script), "--quick", "--seeds", "0", "--pairs", "copy:reverse",
                           "--methods", "scratch", "frozen encoder", "LoRA r=2",
                           "--out", str(out), "--figure", str(tmp_path / "finetune.png")],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = json.loads(out.read_text())["runs"]
    assert [r["method"] for r in runs] == ["scratch", "frozen encoder", "LoRA r=2"]
    assert runs[2]["trainable"] == 3 * 2 * 2 * (16 + 16)      # 3 attentions, w_q and w_v
    # copy and reverse agree on palindromes only: at lengths 1..4 of 10 symbols, on
    # 1/4 (1 + 1/10 + 1/10 + 1/100) of the sequences in expectation
    assert 0.25 < runs[0]["agreement_floor"] < 0.35
    assert runs[0]["weight_drift"] is None                   # scratch has no base
    assert runs[1]["weight_drift"] > 0 and runs[2]["weight_drift"] > 0
    for r in runs:                                           # what is kept of OLD where it agrees with NEW
        assert r["old_loss_agreeing"] > 0 and 0 <= r["old_accuracy_agreeing"] <= 1 and r["agreeing_positions"] > 0
    assert "old loss / accuracy where the tasks agree" in out.with_suffix(".md").read_text()
    assert (tmp_path / "finetune.png").stat().st_size > 0
    proc = subprocess.run([sys.executable, str(script), "--quick", "--costs", "--out", str(out),
                           "--figure", str(tmp_path / "finetune.png")],     # never the repository's figure
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(out.read_text())
    assert [r["method"] for r in results["runs"]] == ["scratch", "frozen encoder", "LoRA r=2"]  # kept
    costs = results["step_costs"]
    assert set(costs) == {"full", "frozen encoder", "frozen encoder and source embedding",
                          "LoRA r=1", "LoRA r=2", "LoRA r=4", "LoRA r=8"}
    assert costs["LoRA r=4"]["trainable"] == 6 * 2 * 4 * (64 + 64)     # the reference model
    assert all(c["seconds"] > 0 and c["seconds_one_thread"] > 0 for c in costs.values())
    proc = subprocess.run([sys.executable, str(script), "--table", "--out", str(out),
                           "--figure", str(tmp_path / "again.png")],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = out.with_suffix(".md").read_text()
    assert "| copy -> reverse | LoRA r=2 | 0.01 | 384 | 0/1 | - | - | " in table and "(not measured yet" not in table
    assert (tmp_path / "again.png").stat().st_size > 0


def test_the_positions_study_runs_in_quick_mode_and_resumes(tmp_path):
    script = ROOT / "benchmarks" / "positions_study.py"
    out = tmp_path / "positions.json"
    command = [sys.executable, str(script), "--quick", "--models", "decoder-only", "--tasks", "reverse",
               "--positionals", "rope", "none", "--seeds", "0", "--out", str(out),
               "--figure", str(tmp_path / "positions.png")]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = json.loads(out.read_text())["runs"]
    assert [(r["positional"], r["seed"]) for r in runs] == [("rope", 0), ("none", 0)]
    assert sorted(int(k) for k in runs[0]["by_length"]) == list(range(1, 7))   # quick: lengths 1..6
    assert "| decoder-only | reverse | rope | " in out.with_suffix(".md").read_text()
    assert (tmp_path / "positions.png").stat().st_size > 0
    proc = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0 and "seed 0:" not in proc.stdout    # nothing trained again
    assert json.loads(out.read_text())["runs"] == runs


def finetune_module():
    """benchmarks/finetune_experiment.py imported."""
    return load_script(ROOT / "benchmarks" / "finetune_experiment.py", "finetune_experiment_for_tests")


def test_the_old_task_is_scored_at_the_positions_where_the_two_tasks_agree():
    """copy and reverse agree at the middle of an odd-length source and where a symbol equals its mirror:
    those positions and no other (never EOS or padding); a model whose logits are copy's answer scores
    accuracy 1 there, one whose logits are reverse's answer too, and one that always answers PAD scores 0."""
    import numpy as np
    from tinytransformer import EOS, PAD, TrainConfig
    from tinytransformer.train import held_out
    fx = finetune_module()
    old, new = (held_out(TrainConfig(task=t, max_len=5, eval_size=300)) for t in ("copy", "reverse"))
    where = fx.agreeing_positions(old, new)
    for src, n, row in zip(old.src, old.src_mask.sum(1), where):
        mirror = src[:n] == src[:n][::-1]
        assert row[:n].tolist() == mirror.tolist() and not row[n:].any()
    assert not where[(old.labels == EOS) | (old.labels == PAD)].any()

    class Answers:                                   # logits that spell out fixed labels
        def __init__(self, labels, vocab):
            self.labels, self.vocab = labels, vocab

        def eval(self):
            return self

        def __call__(self, src, tgt_in):
            return 20.0 * np.eye(self.vocab)[self.labels]
    vocab = int(old.labels.max()) + 1
    for labels in (old.labels, new.labels):
        assert fx.old_where_agreeing(Answers(labels, vocab), old, new)["accuracy"] == 1.0
    flat = fx.old_where_agreeing(Answers(np.zeros_like(old.labels), vocab), old, new)
    assert flat["accuracy"] == 0.0 and flat["positions"] == int(where.sum())
    with pytest.raises(ValueError, match="same sources"):
        fx.agreeing_positions(old, held_out(TrainConfig(task="reverse", max_len=6, eval_size=300)))


def test_the_lora_defaults_table_reads_its_results_and_names_the_defaults(tmp_path):
    """The measured runs of the command line's LoRA defaults: if the defaults change without a new
    measurement, no row is theirs any more and this fails."""
    out = tmp_path / "lora_defaults.json"
    out.write_text((ROOT / "benchmarks" / "results" / "lora_defaults.json").read_text())
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "lora_defaults.py"), "--table",
                           "--out", str(out)], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [line for line in out.with_suffix(".md").read_text().splitlines() if "(the defaults) |" in line]
    for pair in ("copy -> reverse", "reverse -> sort"):
        row = next(line for line in rows if f"| {pair} | 4 |" in line)
        assert "| 5/5 (seeds 0, 1, 2, 3, 4) |" in row, row


def test_the_gpt2_benchmark_runs_in_quick_mode(tmp_path):
    """benchmarks/gpt2_bench.py at tiny shapes: both sides load one folder, so the first full step's
    losses agree to float32 rounding, greedy generation agrees on its first tokens, and every
    measurement of the table is there; --table writes the same table again from the JSON."""
    pytest.importorskip("torch", reason="the benchmark's other side is PyTorch (optional)")
    pytest.importorskip("transformers", reason="the benchmark writes its folder with transformers (optional)")
    script = ROOT / "benchmarks" / "gpt2_bench.py"
    # one thread each, as in the test above: the notebooks run beside the suite
    proc = subprocess.run([sys.executable, str(script), "--quick", "--threads", "1", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "gpt2.json").read_text())
    assert results["quick"] is True and results["threads"] == 1
    full = results["full_step"]
    assert full["NumPy"]["first_loss"] == pytest.approx(full["PyTorch"]["first_loss"], rel=1e-5)
    for kind in ("full_step", "lora_step"):
        for side in ("NumPy", "PyTorch"):
            assert results[kind][side]["median_s"] > 0 and results[kind][side]["fraction_of_peak"] > 0
    assert results["lora_step"]["flops"] < full["flops"]
    assert [row["batch"] for row in results["generation"]] == [1, 2]
    assert results["generation"][0]["leading_tokens_equal"][0] >= 1       # the first token at least
    for side in ("NumPy", "PyTorch"):
        assert results["load"][side]["seconds"] > 0
        assert results["memory_full_step"][side]["peak_rss_growth_bytes"] >= 0
    assert results["matmul_peak"]["peak_gflops"] > 0
    table = (tmp_path / "gpt2.md").read_text()
    assert table.startswith("Measured on ") and "| LoRA step (rank 4, q and v), batch 2 x 16 (s) |" in table
    proc = subprocess.run([sys.executable, str(script), "--table", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "gpt2.md").read_text() == table


def test_step_flops_counts_every_product_of_a_gpt2_layout_step():
    """The FLOPs behind the share of the peak: each product 2 m k n, three times for a trainable
    weight and attention (forward and two gradients), twice for a frozen weight (no weight gradient)."""
    run = load_script(RUN, "bench_run")
    import numpy as np
    V, D, H, F, L, B, T, r = 31, 12, 3, 20, 2, 2, 5, 2
    ids = np.random.default_rng(0).integers(0, V, (B, T + 1))
    full = run.LMRunner(V, D, H, F, L, 16)
    N = B * T
    per_layer = 2 * N * (4 * D * D + 2 * D * F) + 2 * B * T * T * 2 * D         # projections, FF, attention
    assert run.step_flops(full, ids) == 3 * (L * per_layer + 2 * N * D * V)
    lora = run.LMRunner(V, D, H, F, L, 16, lora_rank=r)
    frozen = 2 * (L * 2 * N * (2 * D * D + 2 * D * F) + 2 * N * D * V)         # w_k, w_o, FF, head
    adapted = L * 2 * (2 * 2 * N * D * D + 3 * 2 * N * r * (D + D))            # w_q and w_v with adapters
    attention = 3 * L * 2 * B * T * T * 2 * D
    assert run.step_flops(lora, ids) == frozen + adapted + attention


def test_the_sharing_benchmark_runs_in_quick_mode_and_the_committed_table_is_its_json(tmp_path):
    """benchmarks/sharing.py times a step the three ways and writes what it measured; the committed
    sharing.md is what its markdown() writes from the committed sharing.json."""
    script = ROOT / "benchmarks" / "sharing.py"
    proc = subprocess.run([sys.executable, str(script), "--quick", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "sharing.json").read_text())
    assert results["quick"] is True and len(results["rows"]) == 2
    for row in results["rows"]:
        assert row["multiply_adds"] > 0 and row["worker"] > 0 and row["shared"] > 0 and row["split"] > 0
    sharing = load_script(script, "sharing")
    assert (tmp_path / "sharing.md").read_text() == sharing.markdown(results)
    committed = json.loads((ROOT / "benchmarks" / "results" / "sharing.json").read_text())
    assert committed["quick"] is False
    assert (ROOT / "benchmarks" / "results" / "sharing.md").read_text() == sharing.markdown(committed)
