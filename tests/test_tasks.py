"""Toy tasks: vocabulary, targets, padding and masks, seeding, the LM format."""

import numpy as np
import pytest

from tinytransformer.tasks import (BOS, EOS, EVAL_SEED, PAD, TASKS, Batch, Vocab, batch_from_pairs,
                                   batches, eval_set, get_task, lm_batches, lm_eval_set, lm_prompt,
                                   lm_sequence, make_batch, make_lm_batch, to_lm_batch)


def rows(batch):
    """(source, target) symbol-id lists of every row, read back through the masks."""
    out = []
    for s, ms, lab, mt in zip(batch.src, batch.src_mask, batch.labels, batch.tgt_mask):
        target = lab[mt]
        assert target[-1] == EOS
        out.append((list(s[ms]), list(target[:-1])))
    return out


# ---- vocabulary ---------------------------------------------------------------------------


def test_vocab_ids_are_pad_bos_eos_then_the_symbols():
    v = Vocab(10)
    assert (PAD, BOS, EOS) == (0, 1, 2)
    assert v.size == 13 and v.sep is None
    assert list(v.symbol_ids()) == list(range(3, 13))
    w = Vocab(10, with_sep=True)
    assert w.size == 14 and w.sep == 13          # SEP after the symbols: no id moves
    assert list(w.symbol_ids()) == list(range(3, 13))


def test_encode_and_decode():
    v = Vocab(12)
    ids = v.encode("3 1 4 11")
    assert ids.dtype == np.int64 and list(ids) == [6, 4, 7, 14]
    assert list(v.encode(" 3,1, 4  11 ")) == [6, 4, 7, 14]     # commas and spaces separate
    assert v.decode(ids) == "3 1 4 11"
    # decode stops at the first EOS and drops BOS and PAD
    assert v.decode([BOS, 6, PAD, 4, EOS, 7, 8]) == "3 1"
    assert v.decode_batch(np.array([[6, 7, EOS, PAD], [BOS, 8, 9, 10]])) == ["3 4", "5 6 7"]


def test_parse_and_format_round_trip():
    v = Vocab(10, with_sep=True)
    ids = np.array([BOS, 3, 12, v.sep, 7, EOS, PAD, PAD])
    text = v.format(ids)
    assert text == "<bos> 0 9 <sep> 4 <eos> <pad> <pad>"
    assert np.array_equal(v.parse(text), ids)
    assert v.format(v.parse("<BOS> 0, 9")) == "<bos> 0 9"
    assert v.parse("").shape == (0,) and v.format([]) == ""


@pytest.mark.parametrize("text, words", [
    ("3 1 10", "'10' is not a symbol"),        # symbols are 0..9
    ("3 -1", "'-1' is not a symbol"),
    ("3 x", "'x' is not a symbol"),
    ("314", "'314' is not a symbol"),          # no separators: ambiguous, refused
    ("3 <eos>", "symbols only"),
    ("", "empty sequence"),
])
def test_encode_errors_name_the_bad_token(text, words):
    with pytest.raises(ValueError, match=words):
        Vocab(10).encode(text)


def test_vocab_errors():
    with pytest.raises(ValueError, match="n_symbols"):
        Vocab(0)
    with pytest.raises(ValueError, match="'<sep>' is not a symbol"):
        Vocab(10).parse("1 <sep>")                    # no SEP in this vocabulary
    with pytest.raises(ValueError, match="token id 13 out of range for vocab_size 13"):
        Vocab(10).format([3, 13])
    with pytest.raises(ValueError, match="token id -1 out of range"):
        Vocab(10).decode([3, -1])
    with pytest.raises(ValueError, match="1-D"):
        Vocab(10).decode([[3, 4]])


# ---- tasks and the encoder-decoder batch --------------------------------------------------


def test_task_targets():
    src = np.array([7, 3, 9, 3, 5])
    assert list(TASKS["copy"](src)) == [7, 3, 9, 3, 5]
    assert list(TASKS["reverse"](src)) == [5, 3, 9, 3, 7]
    assert list(TASKS["sort"](src)) == [3, 3, 5, 7, 9]
    assert list(src) == [7, 3, 9, 3, 5]              # the source is not modified


@pytest.mark.parametrize("task, rule", [("copy", lambda s: s), ("reverse", lambda s: s[::-1]),
                                        ("sort", sorted)])
def test_batches_hold_the_task_targets(task, rule):
    batch = make_batch(task, Vocab(10), 64, 1, 16, np.random.default_rng(1))
    for source, target in rows(batch):
        assert target == list(rule(source))
        assert all(3 <= t < 13 for t in source)


def test_decoder_input_labels_padding_and_masks():
    batch = batch_from_pairs([np.array([5, 6, 7]), np.array([8])],
                             [np.array([7, 6, 5]), np.array([8])])
    assert np.array_equal(batch.src, [[5, 6, 7], [8, PAD, PAD]])
    assert np.array_equal(batch.tgt_in, [[BOS, 7, 6, 5], [BOS, 8, PAD, PAD]])
    assert np.array_equal(batch.labels, [[7, 6, 5, EOS], [8, EOS, PAD, PAD]])
    assert np.array_equal(batch.src_mask, [[1, 1, 1], [1, 0, 0]])
    assert np.array_equal(batch.tgt_mask, [[1, 1, 1, 1], [1, 1, 0, 0]])
    assert batch.src_mask.dtype == bool and batch.tgt_mask.dtype == bool
    assert batch.n_tokens == 6


def test_random_batch_layout():
    batch = make_batch("reverse", Vocab(10), 32, 2, 9, np.random.default_rng(3))
    B = len(batch)
    lengths = batch.src_mask.sum(1)
    assert B == 32 and batch.src.dtype == np.int64 and batch.tgt_in.dtype == np.int64
    assert batch.src.shape == (B, lengths.max())                 # padded to the batch's longest
    assert batch.tgt_in.shape == batch.labels.shape == (B, lengths.max() + 1)
    assert np.array_equal(batch.tgt_in[:, 0], np.full(B, BOS))
    assert np.array_equal(batch.tgt_in[:, 1:], batch.labels[:, :-1] * (batch.labels[:, :-1] != EOS))
    assert np.array_equal(batch.labels[np.arange(B), lengths], np.full(B, EOS))
    assert np.array_equal(batch.src_mask, batch.src != PAD)
    assert np.array_equal(batch.tgt_mask, batch.tgt_in != PAD)
    assert np.array_equal(batch.tgt_mask, batch.labels != PAD)
    assert batch.n_tokens == int((lengths + 1).sum())
    # masks are prefixes: every PAD comes after every real token
    assert np.array_equal(batch.src_mask, np.arange(batch.src.shape[1]) < lengths[:, None])


def test_lengths_cover_the_range_uniformly():
    batch = make_batch("copy", Vocab(5), 4000, 3, 7, np.random.default_rng(0))
    counts = np.bincount(batch.src_mask.sum(1), minlength=9)
    assert counts[:3].sum() == 0 and counts[8:].sum() == 0
    assert np.all(np.abs(counts[3:8] - 800) < 120)              # 5 lengths, 800 each expected
    symbols = batch.src[batch.src_mask]
    assert set(np.unique(symbols)) == {3, 4, 5, 6, 7}
    one_length = make_batch("copy", Vocab(5), 10, 4, 4, np.random.default_rng(0))
    assert np.all(one_length.src_mask.sum(1) == 4)


def test_same_seed_same_batches_other_seed_other_batches():
    def first(seed, n=3):
        stream = batches("sort", Vocab(10), 16, 1, 16, np.random.default_rng(seed))
        return [next(stream) for _ in range(n)]

    a, b, c = first(7), first(7), first(8)
    for x, y in zip(a, b):
        for field in ("src", "tgt_in", "labels", "src_mask", "tgt_mask"):
            assert np.array_equal(getattr(x, field), getattr(y, field))
    assert not np.array_equal(a[0].src, a[1].src)                # the stream moves on
    assert a[0].src.shape != c[0].src.shape or not np.array_equal(a[0].src, c[0].src)


def test_no_global_random_state():
    np.random.seed(0)
    x = make_batch("copy", 10, 8, 1, 16, np.random.default_rng(5))
    np.random.seed(1)
    y = make_batch("copy", 10, 8, 1, 16, np.random.default_rng(5))
    assert np.array_equal(x.src, y.src)


def test_eval_set_is_fixed_and_separate_from_training():
    ev = eval_set("reverse", Vocab(10))
    assert isinstance(ev, Batch) and len(ev) == 3200
    assert ev.src.shape[1] == 16                                 # lengths 1..16 by default
    again = eval_set("reverse", 10)
    assert np.array_equal(ev.src, again.src) and np.array_equal(ev.labels, again.labels)
    assert np.array_equal(ev.src, eval_set("reverse", 10, seed=EVAL_SEED).src)
    assert EVAL_SEED not in range(100)                           # not a training-style seed
    # drawn from its own seed: not the batch a training run with a small seed starts from
    for seed in (0, 1, 42):
        train = make_batch("reverse", 10, 1000, 1, 16, np.random.default_rng(seed))
        assert not np.array_equal(train.src, ev.src)
    # a fingerprint of the reference judge: a change to the sampling changes the reference
    # set that published numbers were measured on, so it must be deliberate
    v = Vocab(10)
    assert v.decode(ev.src[15]) == "1 6 4 9 0 7 7 4 5 8 4 7 4 0 7 9"
    assert v.decode(ev.src[1]) == "5 3"
    assert int(ev.src.sum()) == 204151 and ev.n_tokens == 30400     # 200 * (1 + ... + 16) + 3200 EOS
    assert ev.n_tokens == int(ev.src_mask.sum()) + 3200


def test_eval_set_has_every_length_equally_often():
    lengths = eval_set("reverse", 10).src_mask.sum(1)                  # the reference judge
    assert np.array_equal(np.bincount(lengths, minlength=17), [0] + [200] * 16)
    lengths = eval_set("copy", 10, n=160, min_len=3, max_len=10, seed=4).src_mask.sum(1)
    assert np.array_equal(np.bincount(lengths, minlength=11)[3:], [20] * 8)
    lengths = eval_set("copy", 10, n=11, min_len=2, max_len=5).src_mask.sum(1)   # 11 = 4 * 2 + 3
    assert np.array_equal(np.bincount(lengths, minlength=6)[2:], [3, 3, 3, 2])
    # symbols are still random: rows of one length differ
    ev = eval_set("copy", 10, n=32, min_len=16, max_len=16)
    assert len({tuple(row) for row in ev.src}) == 32


def test_eval_set_chunks_cover_it_exactly():
    ev = eval_set("sort", 10, n=70, min_len=1, max_len=9, seed=3)
    chunks = list(ev.chunks(32))
    assert [len(c) for c in chunks] == [32, 32, 6]
    assert sum(c.n_tokens for c in chunks) == ev.n_tokens
    assert sum((rows(c) for c in chunks), []) == rows(ev)
    for c in chunks:                                             # each trimmed to its own longest
        assert c.src_mask[:, -1].any() and c.tgt_mask[:, -1].any()


def test_length_generalisation_set():
    long = eval_set("reverse", 10, n=200, min_len=17, max_len=24)
    lengths = long.src_mask.sum(1)
    assert lengths.min() == 17 and lengths.max() == 24
    for source, target in rows(long):
        assert target == source[::-1]


@pytest.mark.parametrize("kwargs, words", [
    (dict(task="shuffle"), "unknown task 'shuffle': known tasks are copy, reverse, sort"),
    (dict(min_len=5, max_len=4), r"min_len \(5\) must not exceed max_len \(4\)"),
    (dict(min_len=0), "min_len: expected an integer >= 1"),
    (dict(max_len=0, min_len=0), "min_len: expected an integer >= 1"),
    (dict(batch_size=0), "batch_size"),
])
def test_batch_errors(kwargs, words):
    args = dict(task="copy", vocab=Vocab(10), batch_size=4, min_len=1, max_len=8,
                rng=np.random.default_rng(0))
    args.update(kwargs)
    with pytest.raises(ValueError, match=words):
        make_batch(**args)
    with pytest.raises(ValueError, match=words):
        next(batches(**args))


def test_get_task_and_rng_errors():
    with pytest.raises(ValueError, match="known tasks are copy, reverse, sort"):
        get_task("Reverse")
    with pytest.raises(TypeError, match="numpy.random.Generator"):
        make_batch("copy", 10, 4, 1, 8, rng=0)
    with pytest.raises(ValueError, match="n_symbols"):
        eval_set("copy", 0)


# ---- decoder-only format ------------------------------------------------------------------


def test_lm_sequence_and_prompt():
    v = Vocab(10, with_sep=True)
    assert list(lm_prompt([5, 6], v)) == [5, 6, 13]
    assert list(lm_sequence([5, 6], [6, 5], v)) == [5, 6, 13, 6, 5, EOS]


def test_lm_batch_masks_the_source_part_of_the_labels():
    v = Vocab(10, with_sep=True)
    sep = v.sep
    batch = to_lm_batch(batch_from_pairs([np.array([5, 6, 7]), np.array([8])],
                                         [np.array([7, 6, 5]), np.array([8])]), v)
    # sequences: 5 6 7 SEP 7 6 5 EOS  and  8 SEP 8 EOS
    assert np.array_equal(batch.ids, [[5, 6, 7, sep, 7, 6, 5], [8, sep, 8, PAD, PAD, PAD, PAD]])
    assert np.array_equal(batch.labels, [[PAD, PAD, PAD, 7, 6, 5, EOS],
                                         [PAD, 8, EOS, PAD, PAD, PAD, PAD]])
    assert np.array_equal(batch.mask, [[1] * 7, [1, 1, 1, 0, 0, 0, 0]])
    assert batch.n_tokens == 6
    assert np.array_equal(batch.prompt, [[5, 6, 7, sep], [8, sep, PAD, PAD]])
    assert np.array_equal(batch.prompt_mask, batch.prompt != PAD)
    assert np.array_equal(batch.answer, [[7, 6, 5, EOS], [8, EOS, PAD, PAD]])


def test_random_lm_batches():
    v = Vocab(10, with_sep=True)
    lm = make_lm_batch("reverse", v, 16, 1, 16, np.random.default_rng(4))
    seq2seq = make_batch("reverse", v, 16, 1, 16, np.random.default_rng(4))
    assert lm.n_tokens == seq2seq.n_tokens                      # only target and EOS count
    for i in range(16):
        L = int(seq2seq.src_mask[i].sum())
        ids, labels = lm.ids[i][lm.mask[i]], lm.labels[i][lm.mask[i]]
        assert len(ids) == 2 * L + 1 and ids[L] == v.sep
        assert np.all(labels[:L] == PAD)
        assert np.array_equal(labels[L:], seq2seq.labels[i][seq2seq.tgt_mask[i]])
        assert np.array_equal(labels[L:-1], ids[L + 1:])         # labels are the next tokens
        assert np.all(lm.labels[i][~lm.mask[i]] == PAD)
    stream = lm_batches("reverse", v, 16, 1, 16, np.random.default_rng(4))
    assert np.array_equal(next(stream).ids, lm.ids)
    ev = lm_eval_set("reverse", v, n=50)
    assert np.array_equal(ev.answer[:, :ev.answer.shape[1]],
                          eval_set("reverse", v, n=50).labels[:, :ev.answer.shape[1]])


def test_lm_format_needs_sep():
    with pytest.raises(ValueError, match="with_sep=True"):
        make_lm_batch("copy", Vocab(10), 4, 1, 8, np.random.default_rng(0))
    small = make_batch("copy", Vocab(12), 50, 1, 8, np.random.default_rng(0))
    with pytest.raises(ValueError, match="not a symbol of"):
        to_lm_batch(small, Vocab(5, with_sep=True))              # symbol ids collide with SEP
