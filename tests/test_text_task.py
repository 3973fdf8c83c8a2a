"""The text task in the training loop: windows, bits per character, the best checkpoint, resume,
the minutes budget, the tokenizer kept with the run, the errors; and top-p in generate."""

import io

import numpy as np
import pytest

from tinytransformer import DecoderOnlyTransformer, TransformerConfig, generate, load_checkpoint
from tinytransformer.text import split_text
from tinytransformer.text_task import FINETUNE_LR, TextTask, text_train_config, validation_text
from tinytransformer.tokenizers import CharTokenizer
from tinytransformer.train import train

TINY = dict(d_model=16, n_heads=2, d_ff=24, n_decoder_layers=2)
TEXT = "".join(f"the cat sat on mat {i % 7}; the dog ran to log {i % 5}.\n" for i in range(40))


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "tiny.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


def config_for(path, **overrides):
    fields = dict(text=str(path), steps=12, eval_every=5, warmup=2, block_size=16, batch_size=4,
                  minutes=None, log_every=1000)
    return text_train_config(**{**fields, **overrides})


def run(config, out=None, resume=False):
    task = TextTask(config)
    stream = io.StringIO()
    result = train(config, task.default_model_config(**TINY), out_dir=out, resume=resume, stream=stream)
    return result, stream.getvalue()


def test_batches_are_windows_of_the_training_split_shifted_by_one(text_file):
    task = TextTask(config_for(text_file))
    train_ids = np.array(task.tokenizer.encode(split_text(TEXT)[0]))
    batch = task.batch(np.random.default_rng(5))
    assert batch.ids.shape == batch.labels.shape == (4, 16) and batch.n_tokens == 64
    assert (batch.labels[:, :-1] == batch.ids[:, 1:]).all()
    for ids, labels in zip(batch.ids, batch.labels):    # each window lies inside the training split
        window = np.concatenate([ids, labels[-1:]])
        starts = [s for s in range(len(train_ids) - 16) if (train_ids[s:s + 17] == window).all()]
        assert starts


def test_a_text_run_is_judged_by_validation_bits_per_character_and_keeps_the_best(tmp_path, text_file):
    result, printed = run(config_for(text_file), tmp_path / "run")
    evals = result.history["eval"]
    assert [e["step"] for e in evals] == [5, 10, 12] and result.stopped == "budget"
    assert result.best["bpc"] == min(e["bpc"] for e in evals)
    assert "bits per character" in printed and f"{evals[0]['bpc']:.4f}" in printed
    assert f"-> {evals[0]['sample']!r}" in printed and len(evals[0]["sample"]) > 0
    model, info = load_checkpoint(tmp_path / "run", which="best")
    assert info["step"] == result.best["step"]
    assert isinstance(info["tokenizer"], CharTokenizer)
    assert info["tokenizer"].characters == sorted(set(TEXT))          # the whole text's characters
    assert info["task"]["text"] == str(text_file.resolve()) and len(info["task"]["sha256"]) == 64
    # the model config fits the tokenizer: no special ids, nothing masked as padding
    assert (model.config.pad_id, model.config.bos_id, model.config.eos_id) == (None, None, None)
    assert model.config.vocab_size == info["tokenizer"].vocab_size and model.config.max_len == 16


def test_a_context_of_one_token_is_judged_too(text_file):
    """The sample continues the one-token prompt by one token: the last token is never fed."""
    result, _ = run(config_for(text_file, block_size=1, steps=5))
    assert [e["step"] for e in result.history["eval"]] == [5] and len(result.best["sample"]) == 1


def test_the_sample_never_shifts_the_training_stream(tmp_path, text_file):
    """Evaluating every step or never gives the same training losses: the sample has its own Generator."""
    often, _ = run(config_for(text_file, eval_every=1))
    never, _ = run(config_for(text_file, eval_every=100))
    assert often.history["loss"] == never.history["loss"]


def test_resume_reaches_the_same_parameters_bit_for_bit(tmp_path, text_file):
    whole, _ = run(config_for(text_file), tmp_path / "whole")
    run(config_for(text_file, steps=7, decay_steps=12), tmp_path / "split")    # the schedule of 12
    resumed, printed = run(config_for(text_file), tmp_path / "split", resume=True)
    assert "Resuming" in printed and resumed.history["loss"] == whole.history["loss"]
    a = load_checkpoint(tmp_path / "whole", which="last")[0].state_dict()
    b = load_checkpoint(tmp_path / "split", which="last")[0].state_dict()
    assert all(np.array_equal(a[name], b[name]) for name in a)


def test_resume_refuses_a_text_that_changed(tmp_path, text_file):
    run(config_for(text_file, steps=5, decay_steps=12), tmp_path / "run")
    text_file.write_text(TEXT.replace("cat", "cot"), encoding="utf-8")
    with pytest.raises(ValueError, match="sha256"):
        run(config_for(text_file), tmp_path / "run", resume=True)
    info = load_checkpoint(tmp_path / "run")[1]
    with pytest.raises(ValueError, match="has changed since the run read it"):
        validation_text(info["task"])


def test_minutes_stop_the_run_and_evaluate_where_it_stopped(tmp_path, text_file):
    result, printed = run(config_for(text_file, steps=100_000, eval_every=100_000, minutes=0.01),
                          tmp_path / "run")
    assert result.stopped == "minutes" and 0 < result.steps < 100_000 and result.seconds >= 0.6
    assert result.history["eval"][-1]["step"] == result.steps
    # resumed with the same budget, there is nothing left to do; a larger one continues
    again, printed = run(config_for(text_file, steps=100_000, eval_every=100_000, minutes=0.01),
                         tmp_path / "run", resume=True)
    assert again.stopped == "minutes" and again.steps == result.steps and "--minutes" in printed
    longer, _ = run(config_for(text_file, steps=100_000, eval_every=100_000, minutes=0.02),
                    tmp_path / "run", resume=True)
    assert longer.steps > result.steps


def test_the_text_defaults_and_the_fine_tuning_learning_rates():
    scratch = text_train_config()
    assert (scratch.lr, scratch.min_lr, scratch.decay_steps) == (3e-3, 3e-4, scratch.steps)
    assert (scratch.batch_size, scratch.block_size, scratch.minutes, scratch.label_smoothing) == \
        (32, 128, 10.0, 0.0)
    assert text_train_config(init_from="x").lr == FINETUNE_LR["full"] == 1e-4
    assert text_train_config(init_from="x", lora_rank=2).lr == FINETUNE_LR["lora"] == 1e-3
    assert text_train_config(init_from="x", lr=5e-5).lr == 5e-5


@pytest.mark.parametrize("content, kind, message", [
    (None, FileNotFoundError, "no such file"),
    (b"caf\xe9 au lait", ValueError, "not UTF-8"),
    (b"", ValueError, "empty"),
    (b"a short text", ValueError, "fewer than one window"),
])
def test_a_text_that_cannot_be_trained_on_is_refused_naming_the_problem(tmp_path, content, kind, message):
    path = tmp_path / "text.txt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(kind, match=message):
        TextTask(config_for(path))


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match=r"vocab_size: .*>= 256.*got 100"):
        text_train_config(tokenizer="bpe", vocab_size=100)
    with pytest.raises(ValueError, match="vocab_size: only a bpe tokenizer"):
        text_train_config(tokenizer="char", vocab_size=300)
    with pytest.raises(ValueError, match="tokenizer: expected one of"):
        text_train_config(tokenizer="words")
    with pytest.raises(ValueError, match="model: the text task trains a decoder-only model"):
        text_train_config(model="encoder-decoder")
    with pytest.raises(ValueError, match="minutes: expected a number > 0"):
        text_train_config(minutes=0)


def test_fine_tuning_a_text_run_keeps_its_tokenizer_and_refuses_what_it_cannot_encode(tmp_path, text_file):
    run(config_for(text_file, steps=5), tmp_path / "base")
    tuned, _ = run(config_for(text_file, steps=3, init_from=str(tmp_path / "base"), lora_rank=2),
                   tmp_path / "tuned")
    tokenizer = load_checkpoint(tmp_path / "tuned")[1]["tokenizer"]
    assert tokenizer.characters == sorted(set(TEXT)) and tuned.steps == 3
    other = tmp_path / "other.txt"
    other.write_text(TEXT.replace("dog", "dZg"), encoding="utf-8")
    with pytest.raises(ValueError, match=r"training split.*'Z'"):
        TextTask(config_for(other, init_from=str(tmp_path / "base")))


def test_bpe_is_trained_on_the_training_split_only(tmp_path):
    path = tmp_path / "text.txt"
    train_part = "abab " * 360
    path.write_text(train_part + "xy" * 100, encoding="utf-8")     # the last 10% is xy only
    task = TextTask(config_for(path, tokenizer="bpe", vocab_size=270))
    assert split_text(path.read_text())[0] == train_part
    learned = {left + right for left, right in task.tokenizer.merges}
    assert b"ab" in learned and not any(b"x" in token or b"y" in token for token in learned)


# ---- top-p in generate --------------------------------------------------------------------


def model_with_probabilities(probs):
    """A decoder-only model whose next-token distribution is ``probs`` whatever it reads:
    the output projection's weight is zero, its bias the log-probabilities."""
    config = TransformerConfig(vocab_size=len(probs), d_model=8, n_heads=2, d_ff=12, n_encoder_layers=0,
                               n_decoder_layers=1, max_len=8, pad_id=None, bos_id=None, eos_id=None)
    model = DecoderOnlyTransformer(config, np.random.default_rng(0), dtype=np.float64)
    model.out_proj.params["weight"][...] = 0.0
    model.out_proj.params["bias"][...] = np.log(probs)
    return model


@pytest.mark.parametrize("top_p, nucleus", [(0.74, {0, 1}), (0.76, {0, 1, 2}), (0.3, {0}),
                                            (1.0, {0, 1, 2, 3, 4})])
def test_generate_with_top_p_draws_exactly_the_nucleus(top_p, nucleus):
    """The nucleus is the smallest set of most likely tokens whose probabilities reach p:
    token 1 follows 0.5, token 2 follows 0.75, so p = 0.74 keeps {0, 1} and 0.76 keeps {0, 1, 2};
    within it each token is drawn in proportion to its probability."""
    probs = np.array([0.0625, 0.5, 0.125, 0.25, 0.0625])[[1, 3, 2, 0, 4]]   # 0.5, 0.25, 0.125, ...
    model = model_with_probabilities(probs)
    prompts = np.zeros((4000, 1), dtype=np.int64)
    drawn = generate(model, prompts, 1, temperature=1.0, top_p=top_p, rng=np.random.default_rng(0))[:, 0]
    assert set(drawn.tolist()) == nucleus
    kept = np.array(sorted(nucleus))
    expected = probs[kept] / probs[kept].sum()
    observed = np.bincount(drawn, minlength=len(probs))[kept] / len(drawn)
    assert np.abs(observed - expected).max() < 0.03


def test_generate_refuses_a_top_p_outside_0_1():
    model = model_with_probabilities(np.full(5, 0.2))
    with pytest.raises(ValueError, match=r"top_p: expected a probability in \(0, 1\]"):
        generate(model, np.zeros((1, 1), dtype=np.int64), 1, temperature=1.0, top_p=0.0,
                 rng=np.random.default_rng(0))
