"""The text task's pieces: corpus, split, windows, and bits per character against a hand computation."""

import math

import numpy as np
import pytest

from tinytransformer import DecoderOnlyTransformer, TransformerConfig
from tinytransformer.text import (TextData, bits_per_char, default_corpus, load_text,
                                  random_windows, split_text, window_plan)


class Letters:
    """A character tokenizer over a fixed alphabet, written out here so these tests need nothing else."""

    def __init__(self, alphabet):
        self.alphabet = alphabet
        self.vocab_size = len(alphabet)

    def encode(self, text):
        for i, ch in enumerate(text):
            if ch not in self.alphabet:
                raise ValueError(f"character {ch!r} at position {i} is not in the vocabulary")
        return [self.alphabet.index(ch) for ch in text]

    def decode(self, ids):
        return "".join(self.alphabet[i] for i in ids)


def tiny_model(vocab_size, max_len, seed=0):
    config = TransformerConfig(vocab_size=vocab_size, d_model=12, n_heads=2, d_ff=20,
                               n_decoder_layers=2, max_len=max_len,
                               pad_id=None, bos_id=None, eos_id=None)    # every id is a character
    return DecoderOnlyTransformer(config, np.random.default_rng(seed), dtype=np.float64)


def test_the_default_corpus_is_the_help_topics_in_key_order():
    from pydoc_data.topics import topics
    text = default_corpus()
    first, second = sorted(topics)[:2]
    assert text.startswith(topics[first] + "\n\n" + topics[second])
    assert len(text) == sum(map(len, topics.values())) + 2 * (len(topics) - 1)
    assert load_text() == text


def test_load_text_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_text(tmp_path / "missing.txt")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(ValueError, match=r"not UTF-8.*0xe9.*offset 3"):
        load_text(tmp_path / "latin1.txt")
    (tmp_path / "empty.txt").write_bytes(b"")
    with pytest.raises(ValueError, match="empty"):
        load_text(tmp_path / "empty.txt")
    (tmp_path / "ok.txt").write_bytes("héllo\r\n".encode())
    assert load_text(tmp_path / "ok.txt") == "héllo\r\n"


def test_the_validation_split_is_the_last_tenth():
    text = "".join(chr(ord("a") + i % 26) for i in range(1000))
    train, val = split_text(text)
    assert train + val == text and len(val) == 100
    with pytest.raises(ValueError, match="too few"):
        split_text("abc")


def test_text_data_refuses_what_it_cannot_train_on():
    tok = Letters("ab ")
    with pytest.raises(ValueError, match=r"training split.*'c' at position 4"):
        TextData.from_text("ab ac" * 4, tok, block_size=2)
    with pytest.raises(ValueError, match=r"validation split.*'c'"):
        TextData.from_text("ab " * 30 + "c", tok, block_size=2)
    with pytest.raises(ValueError, match="fewer than one window"):
        TextData.from_text("ab " * 4, tok, block_size=16)


def test_batches_are_windows_of_the_text_shifted_by_one():
    ids = np.arange(100, 200)
    x, y = random_windows(ids, batch_size=7, block_size=5, rng=np.random.default_rng(3))
    assert x.shape == y.shape == (7, 5)
    starts = x[:, 0] - 100
    np.testing.assert_array_equal(x, 100 + starts[:, None] + np.arange(5))
    np.testing.assert_array_equal(y, x + 1)
    assert starts.min() >= 0 and starts.max() <= 100 - 6
    x2, _ = random_windows(ids, 7, 5, np.random.default_rng(3))
    np.testing.assert_array_equal(x, x2)


@pytest.mark.parametrize("n, block", [(2, 4), (9, 4), (10, 4), (23, 6), (40, 7), (5, 1)])
def test_the_window_plan_scores_every_token_but_the_first_exactly_once(n, block):
    scored = []
    for start, first, last in window_plan(n, block):
        assert last - start <= block                 # the window feeds at most block tokens
        assert start < first <= last
        if start > 0:                                # past the first window: half a block of context
            assert first - start >= block // 2
        scored += range(first, last + 1)
    assert scored == list(range(1, n))


def test_bits_per_char_equals_a_hand_computation_token_by_token():
    """Each token scored from exactly its window's earlier tokens, one forward per token."""
    tok = Letters("abcde ")
    text = "abc de cab ed bad"
    ids = tok.encode(text)
    model = tiny_model(tok.vocab_size, max_len=8)
    total = 0.0
    for start, first, last in window_plan(len(ids), 6):
        for p in range(first, last + 1):
            logits = model(np.array([ids[start:p]]))[0, -1]                      # (V,)
            log_probs = logits - np.log(np.exp(logits - logits.max()).sum()) - logits.max()
            total -= log_probs[ids[p]]
    expected = total / math.log(2) / len(text)
    assert bits_per_char(model, tok, text, block_size=6, batch_size=2) == pytest.approx(expected, rel=1e-12)


def test_bits_per_char_with_one_window_is_the_mean_loss_over_the_characters():
    """With one window the sum is the model's own cross-entropy over the shifted sequence."""
    tok = Letters("xyz")
    text = "xyzzyxzy"
    ids = np.array([tok.encode(text)])
    model = tiny_model(3, max_len=16)
    logits = model(ids[:, :-1])[0]
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    nats = -logp[np.arange(len(text) - 1), ids[0, 1:]].sum()
    assert bits_per_char(model, tok, text) == pytest.approx(nats / math.log(2) / len(text), rel=1e-12)


def test_bits_per_char_counts_characters_not_tokens():
    """A tokenizer that writes every character twice, scored over the same text: the same
    characters, twice the tokens; bits per character divides by the characters."""
    class Twice(Letters):
        def encode(self, text):
            return [i for i in super().encode(text) for _ in (0, 1)]

    tok, text = Twice("ab"), "abba"
    model = tiny_model(2, max_len=16)
    ids = np.array([tok.encode(text)])
    logits = model(ids[:, :-1])[0]
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    nats = -logp[np.arange(7), ids[0, 1:]].sum()
    assert bits_per_char(model, tok, text) == pytest.approx(nats / math.log(2) / 4, rel=1e-12)


def test_bits_per_char_leaves_the_model_as_it_found_it_and_checks_its_arguments():
    tok = Letters("ab")
    model = tiny_model(2, max_len=4)
    model.train()
    bits_per_char(model, tok, "abab")
    assert model.training
    with pytest.raises(ValueError, match="block_size"):
        bits_per_char(model, tok, "abab", block_size=5)
    with pytest.raises(ValueError, match="at least 2"):
        bits_per_char(model, tok, "a")
