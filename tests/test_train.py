"""The training loop: it learns, it resumes bit for bit, it stops on Ctrl-C, it scores correctly."""

import importlib
import io
import json
import os
import signal

import numpy as np
import pytest

import tinytransformer.decode
from tinytransformer.checkpoint import load_checkpoint
from tinytransformer.nn.loss import CrossEntropyLoss
from tinytransformer.nn.transformer import Transformer, TransformerConfig
from tinytransformer.optim import Adam
from tinytransformer.tasks import PAD, Vocab, eval_set, make_batch
from tinytransformer.train import TrainConfig, default_model_config, evaluate, train

# the module, not the function: the package re-exports train(), which hides the submodule's name
train_module = importlib.import_module("tinytransformer.train")

SMALL = dict(d_model=32, n_heads=2, d_ff=64, n_encoder_layers=1, n_decoder_layers=1, max_len=16)


def test_a_small_model_overfits_a_tiny_batch():
    """Four fixed sequences, 150 steps: the loss must go to (nearly) zero."""
    rng = np.random.default_rng(0)
    batch = make_batch("reverse", 8, batch_size=4, min_len=3, max_len=6, rng=rng)
    model = Transformer(TransformerConfig(vocab_size=Vocab(8).size, **SMALL), rng=rng)
    crit = CrossEntropyLoss(ignore_index=PAD)
    opt = Adam(model, lr=3e-3)
    losses = []
    for _ in range(150):
        model.zero_grad()
        logits = model(batch.src, batch.tgt_in)
        loss = crit(logits, batch.labels)
        model.backward(crit.backward())
        opt.step()
        losses.append(loss)
    assert losses[0] > 1.5                      # about log(11) at the start
    assert losses[-1] < 0.02, losses[-10:]


def test_short_copy_training_solves_the_task():
    config = TrainConfig(task="copy", max_len=5, steps=600, eval_every=50, eval_size=500, seed=0)
    stream = io.StringIO()
    result = train(config, default_model_config(config, **SMALL), stream=stream)
    assert result.stopped == "target", stream.getvalue()
    assert result.best["exact_match"] >= 0.995 and result.best["worst"] >= 0.99
    # what the run reports is what the returned model does
    again = evaluate(result.model, eval_set("copy", 10, 500, 1, 5))
    assert again["exact_match"] == result.best["exact_match"]
    assert min(again["by_length"].values()) == result.best["worst"]
    # and it holds on sequences it was never judged on, at every length
    fresh = evaluate(result.model, eval_set("copy", 10, 500, 1, 5, seed=11))
    assert fresh["exact_match"] >= 0.99 and fresh["worst"] >= 0.97, fresh["by_length"]
    assert "eval at step" in stream.getvalue() and "tok/s" in stream.getvalue()


def test_the_progress_shows_the_worst_length():
    config = TrainConfig(task="reverse", max_len=6, steps=20, eval_every=10, eval_size=60)
    stream = io.StringIO()
    result = train(config, default_model_config(config, **SMALL), stream=stream)
    lines = [line for line in stream.getvalue().splitlines() if line.startswith("eval at step")]
    assert len(lines) == 2
    for line, entry in zip(lines, result.history["eval"]):
        assert f"worst length {entry['worst_length']}: {entry['worst']:.3f}" in line, line
        assert 1 <= entry["worst_length"] <= 6


@pytest.mark.parametrize("overall, worst, stops", [
    (1.0, 0.99, False),          # the average passes, one length does not: keep training
    (0.99, 1.0, False),          # every length at 99.5% or better, the average too low
    (0.995, 0.995, True),        # both at their thresholds
])
def test_the_stop_rule_needs_the_overall_and_the_worst_length(monkeypatch, overall, worst, stops):
    config = TrainConfig(task="copy", max_len=4, steps=30, eval_every=10, eval_size=40)
    assert train_module.solved({"exact_match": overall, "worst": worst}, config) is stops
    # the loop itself: the second evaluation gives these figures, the others nothing
    calls = []

    def fake_evaluate(model, data):
        calls.append(1)
        good = len(calls) == 2
        return {"exact_match": overall if good else 0.0, "worst": worst if good else 0.0,
                "worst_length": 4, "token_accuracy": 0.5, "by_length": {}, "n": len(data)}

    monkeypatch.setattr(train_module, "evaluate", fake_evaluate)
    result = train(config, default_model_config(config, **SMALL), stream=io.StringIO())
    assert (result.stopped, result.steps) == (("target", 20) if stops else ("budget", 30))
    assert result.best["step"] == 20          # the better evaluation is the one kept


def test_decoder_only_learns_copy_in_lm_format():
    config = TrainConfig(task="copy", max_len=4, steps=600, lr=5e-3, eval_every=50, eval_size=200,
                         model="decoder-only", seed=0, target=0.95, target_worst=0.9)
    result = train(config, default_model_config(config, **SMALL), stream=io.StringIO())
    assert result.stopped == "target" and result.best["exact_match"] >= 0.95, result.history["eval"]


class _Interrupt:
    """Wraps draw_batch: on its ``at``-th call, press Ctrl-C (SIGINT) or raise KeyboardInterrupt."""

    def __init__(self, how, at):
        self.how, self.at, self.calls = how, at, 0
        self.draw = train_module.draw_batch

    def __call__(self, *args):
        self.calls += 1
        batch = self.draw(*args)
        if self.calls == self.at:
            if self.how == "sigint":
                os.kill(os.getpid(), signal.SIGINT)   # the handler only asks the loop to stop
            else:
                raise KeyboardInterrupt               # as outside the main thread: the step,
        return batch                                  # whose batch was drawn, is dropped


def _arrays(path):
    with np.load(path, allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files if not k.startswith("__meta__")}


@pytest.mark.parametrize("how", ["sigint", "keyboardinterrupt", "budget"])
def test_resume_reaches_the_same_parameters_bit_for_bit(tmp_path, monkeypatch, how):
    # dropout on, so the dropout Generator's state matters too; the target is out of reach
    config = TrainConfig(task="reverse", max_len=6, steps=30, eval_every=10, eval_size=30,
                         seed=3, target=1.0)
    model_config = default_model_config(config, **SMALL, dropout=0.1)
    whole = train(config, model_config, out_dir=tmp_path / "whole", stream=io.StringIO())
    assert whole.steps == 30 and whole.stopped == "budget"

    out = tmp_path / "split"
    stream = io.StringIO()
    if how == "budget":      # a shorter budget first: its extra evaluation must not shift anything
        first = train(TrainConfig(**{**config.to_dict(), "steps": 17}), model_config, out_dir=out,
                      stream=stream)
        assert first.steps == 17
    else:
        monkeypatch.setattr(train_module, "draw_batch", _Interrupt(how, at=17))
        first = train(config, model_config, out_dir=out, stream=stream)
        monkeypatch.undo()
        assert first.stopped == "interrupted"
        assert first.steps == (17 if how == "sigint" else 16)
        assert f"--out {out} --resume" in stream.getvalue()
    assert load_checkpoint(out, which="last")[1]["step"] == first.steps
    second = train(config, model_config, out_dir=out, resume=True, stream=io.StringIO())
    assert second.steps == 30

    a, b = _arrays(tmp_path / "whole" / "last.npz"), _arrays(out / "last.npz")
    assert sorted(a) == sorted(b) and any(k.startswith("optimizer/") for k in a)
    for key in a:
        assert np.array_equal(a[key], b[key]), key
    history_a = json.loads((tmp_path / "whole" / "history.json").read_text())
    history_b = json.loads((out / "history.json").read_text())
    for key in ("step", "loss", "lr", "grad_norm"):
        assert history_a[key] == history_b[key], key


def test_history_json_has_the_layout_plot_reads(tmp_path):
    config = TrainConfig(task="sort", max_len=5, steps=30, eval_every=10, eval_size=40, target=1.0)
    train(config, default_model_config(config, **SMALL), out_dir=tmp_path, stream=io.StringIO())
    history = json.loads((tmp_path / "history.json").read_text())
    assert history["step"] == list(range(1, 31))
    for key in ("loss", "lr", "grad_norm"):
        assert len(history[key]) == 30 and all(isinstance(v, float) for v in history[key])
    assert history["lr"][0] == pytest.approx(config.lr / config.warmup)     # warmup: step 1
    assert [e["step"] for e in history["eval"]] == [10, 20, 30]
    assert set(history["eval"][0]) >= {"step", "exact_match", "worst", "worst_length", "token_accuracy"}
    assert history["target"] == 1.0 and history["stopped"] == "budget"
    best = max(history["eval"], key=lambda e: (e["worst"], e["exact_match"]))
    assert (history["best"]["worst"], history["best"]["exact_match"]) == (best["worst"], best["exact_match"])
    assert load_checkpoint(tmp_path)[1]["step"] == history["best"]["step"]     # best.npz
    run = json.loads((tmp_path / "config.json").read_text())
    assert run["train"] == config.to_dict() and run["model"]["d_model"] == 32


def test_evaluate_scores_exact_match_and_token_accuracy(monkeypatch):
    data = eval_set("reverse", 10, n=60, min_len=1, max_len=6)
    answers = {tuple(s[m]): labels for s, m, labels in zip(data.src, data.src_mask, data.labels)}
    wrong = tuple(data.src[7][data.src_mask[7]])          # this source gets one token wrong
    n_wrong = sum(tuple(s[m]) == wrong for s, m in zip(data.src, data.src_mask))

    def fake_decode(model, src_ids, max_len):
        out = np.full((len(src_ids), max_len), PAD)
        for i, src in enumerate(src_ids):
            key = tuple(src[src != PAD])
            out[i] = answers[key][:max_len]
            if key == wrong:
                out[i, 0] = 3 if out[i, 0] != 3 else 4
        return out

    monkeypatch.setattr(tinytransformer.decode, "greedy_decode", fake_decode)
    scores = evaluate(Transformer(TransformerConfig(vocab_size=13, **SMALL), np.random.default_rng(0)), data)
    n_tokens = int((data.labels != PAD).sum())
    assert scores["exact_match"] == pytest.approx((60 - n_wrong) / 60)
    assert scores["token_accuracy"] == pytest.approx((n_tokens - n_wrong) / n_tokens)
    assert sorted(scores["by_length"]) == sorted(set(data.src_mask.sum(1).tolist()))


def test_divergence_is_a_clear_error():
    config = TrainConfig(task="copy", max_len=4, steps=50, optimizer="sgd", lr=1e4, momentum=0.9, clip=None,
                         schedule="constant", warmup=0)
    with np.errstate(all="ignore"), pytest.raises(FloatingPointError, match="diverged at step"):
        train(config, default_model_config(config, **SMALL), stream=io.StringIO())


def test_train_config_round_trips_and_rejects_nonsense():
    config = TrainConfig(task="sort", betas=[0.8, 0.9], clip=1.0)
    assert config.betas == (0.8, 0.9)
    assert TrainConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(ValueError, match="task"):
        TrainConfig(task="shuffle")
    with pytest.raises(ValueError, match="min_len"):
        TrainConfig(min_len=5, max_len=3)
    with pytest.raises(ValueError, match="unknown field"):
        TrainConfig.from_dict({"tsak": "copy"})
    with pytest.raises(ValueError, match="max_len"):      # s SEP t does not fit 20 positions
        default_model_config(TrainConfig(model="decoder-only", max_len=16), max_len=20)


def test_default_model_configs():
    reference = default_model_config(TrainConfig())
    assert (reference.vocab_size, reference.d_model, reference.n_heads, reference.d_ff) == (13, 64, 4, 256)
    assert (reference.n_encoder_layers, reference.n_decoder_layers, reference.dropout) == (2, 2, 0.0)
    lm = default_model_config(TrainConfig(model="decoder-only"))
    assert (lm.vocab_size, lm.n_encoder_layers, lm.n_decoder_layers) == (14, 0, 4)   # SEP; 2 + 2 blocks
    assert default_model_config(TrainConfig(model="decoder-only"), n_decoder_layers=2).n_decoder_layers == 2


def test_held_out_takes_a_seed_of_its_own():
    """The default is the stop rule's set (EVAL_SEED); another seed draws other sequences of the
    same lengths, in the run's format (used to judge a kept model on data it was never chosen on)."""
    from tinytransformer.tasks import EVAL_SEED, lm_eval_set
    from tinytransformer.train import held_out, task_vocab
    for model, make in (("encoder-decoder", eval_set), ("decoder-only", lm_eval_set)):
        config = TrainConfig(model=model, max_len=5, eval_size=50)
        default, fresh = held_out(config), held_out(config, seed=EVAL_SEED + 1)
        assert np.array_equal(default.labels, make("reverse", task_vocab(config), 50, 1, 5).labels)
        assert default.labels.shape[0] == fresh.labels.shape[0] == 50
        assert not np.array_equal(default.labels, fresh.labels)


class HeldOutLossTask:
    """Another kind of task than the toy tasks' exact match: copy, judged by the cross-entropy on
    a fixed held-out batch (as text is judged by bits per character), solved below a loss."""

    def __init__(self, config):
        self.config, self.vocab = config, Vocab(config.n_symbols)
        self.held_out = make_batch("copy", self.vocab, 32, config.min_len, config.max_len,
                                   np.random.default_rng(99))

    def summary(self):
        return "copy, judged by its held-out loss"

    def info(self):
        return {"name": "copy", "judged_by": "held-out loss"}

    def save(self, out_dir):
        """Nothing to keep beside the checkpoints."""

    def batch(self, rng):
        c = self.config
        return make_batch("copy", self.vocab, c.batch_size, c.min_len, c.max_len, rng)

    def judge(self, model):
        model.eval()
        loss = CrossEntropyLoss(ignore_index=PAD)(model(self.held_out.src, self.held_out.tgt_in),
                                                  self.held_out.labels)
        model.train()
        return {"held_out_loss": float(loss)}

    def better(self, entry, best):
        return best is None or entry["held_out_loss"] < best["held_out_loss"]

    def solved(self, entry):
        return entry["held_out_loss"] < 2.0

    def describe(self, entry):
        return f"held-out loss {entry['held_out_loss']:.3f}"


def test_another_kind_of_task_plugs_into_the_loop(tmp_path, monkeypatch):
    """The loop asks the task for its batches, its evaluation and its stop rule, nothing else."""
    config = TrainConfig(task="copy", max_len=5, steps=400, eval_every=20, seed=0, log_every=1000)
    monkeypatch.setattr(train_module, "task_for", HeldOutLossTask)
    stream = io.StringIO()
    result = train(config, default_model_config(config, **SMALL), out_dir=tmp_path / "run", stream=stream)
    losses = [entry["held_out_loss"] for entry in result.history["eval"]]
    assert result.stopped == "target" and losses[-1] < 2.0 <= min(losses[:-1])
    assert "on copy, judged by its held-out loss, seed 0" in stream.getvalue()
    assert f"eval at step {result.steps}: held-out loss {losses[-1]:.3f}" in stream.getvalue()
    best, info = load_checkpoint(tmp_path / "run", which="best")
    assert info["task"] == {"name": "copy", "judged_by": "held-out loss"}
    assert info["extra"]["eval"]["held_out_loss"] == min(losses)
