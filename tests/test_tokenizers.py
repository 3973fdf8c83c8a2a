"""Tokenizers: round trips, refusals, BPE worked by hand, the files, and the reference tokenizers.

The reference checks (transformers, tokenizers, tiktoken) skip when the library is absent;
the GPT-2 checks also need GPT-2's files, which ``benchmarks/fetch_gpt2_tokenizer.py`` fetches
into ~/.cache/tinytransformer/gpt2 (they are never in the repository).
"""

import json
import unicodedata
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from pydoc_data.topics import topics

from tinytransformer import BPETokenizer, ByteTokenizer, CharTokenizer, load_tokenizer
from tinytransformer.tokenizers.bpe import learn_merges, learn_merges_incremental
from tinytransformer.tokenizers.byte_characters import (BYTE_TO_CHARACTER, bytes_to_characters,
                                                        characters_to_bytes)
from tinytransformer.tokenizers.gpt2_pattern import pretokenize

GPT2_DIR = Path.home() / ".cache" / "tinytransformer" / "gpt2"
FETCH_SCRIPT = "benchmarks/fetch_gpt2_tokenizer.py"

# Pieces random texts are made of. Every character here is old enough that every library's
# Unicode tables agree on whether it is a letter, a number or a space.
FRAGMENTS = [
    "a", "b", "z", "Q", "the", " the", "The", "don't", "'s", "'S", "'ll", "'ve", "'",
    "0", "7", "2024", "3.14",
    "é", "ñ", "Å", "ß", "œ", "e\u0301", "a\u0308", "\u0301", "\u0327\u0301",    # accents, combining marks
    "😀", "👍🏽", "👩\u200d💻", "🇫🇷", "❤️",                                     # emoji, modifiers, ZWJ, flags
    "漢字", "ひらがな", "привет", "λόγος", "مرحبا", "שלום", "नमस्ते", "١٢٣", "½", "Ⅻ",
    " ", "  ", "\t", "\n", "\n\n", "\r\n", "\r", "\x0b", "\x0c", "\x00", "\x7f", "\x1c", "\x85",
    "\u00a0", "\u2003", "\u3000", "\u2028", "\ufeff", "\ue000", "\U0010ffff", "\U0001d400",
    "!", "?", "...", "--", "(", ")", "{}", "<", ">", "|", "$", "€", "_", "#", "@", "\\", '"',
    "<|endoftext|>", "<|endoftext", "|>",
]


def random_text(rng: np.random.Generator, n_fragments: int) -> str:
    """Fragments drawn at random, each repeated 1-3 times (runs of spaces, newlines, emoji...)."""
    return "".join(FRAGMENTS[rng.integers(len(FRAGMENTS))] * int(rng.integers(1, 4))
                   for _ in range(n_fragments))


def random_texts(seed: int, count: int = 60) -> list[str]:
    rng = np.random.default_rng(seed)
    return [random_text(rng, int(rng.integers(1, 40))) for _ in range(count)]


CRAFTED = [
    "", " ", "  ", "\n", "Hello world", " Hello  world!", "naïve café, Ångström, Straße, crème brûlée",
    "cafe\u0301 vs café", "emoji 😀😀 👍🏽 👩\u200d💻 🇫🇷🇩🇪 end", "digits 0 12 345 6789 3.14159 1,000,000 ١٢٣",
    "spaces:   three,    four,\tand tabs\t\t", "newlines\n\n\nthree, CRLF\r\n\r\nand a lone \r",
    "trailing spaces   ", "   leading spaces", "a\x00NUL and \x7f DEL",
    "I'm, you're, they'll, we've, it's, I'd", "SHOUTING DON'T",
    "text<|endoftext|>more <|endoftext|> and <|endoftext|>", "    def f(x):\n        return x\n",
]


@pytest.fixture(scope="module")
def corpus() -> str:
    """The default corpus: Python's help topics in sorted key order, joined by blank lines."""
    return "\n\n".join(topics[key] for key in sorted(topics))


@pytest.fixture(scope="module")
def corpus_sample(corpus) -> str:
    """Four 10,000-character stretches of the corpus from seeded places."""
    starts = np.random.default_rng(7).integers(0, len(corpus) - 10_000, size=4)
    return "".join(corpus[start:start + 10_000] for start in starts)


@pytest.fixture(scope="module")
def trained(corpus) -> BPETokenizer:
    """A small BPE trained on the start of the corpus and on random texts (merges of multi-byte
    characters too)."""
    return BPETokenizer.train(corpus[:40_000] + "".join(random_texts(seed=0, count=300)), vocab_size=600)


def code_point_sample() -> str:
    """Every 37th code point up to U+2FFFF that Python's Unicode tables say is assigned (not a
    surrogate), each inside a word, after a space and before a letter."""
    chars = [chr(code) for code in range(0, 0x30000, 37)
             if unicodedata.category(chr(code)) not in ("Cn", "Cs")]
    return "".join(f"a{char}b {char}x " for char in chars)


def texts_to_compare(corpus_sample) -> list[str]:
    return [corpus_sample, code_point_sample(), *CRAFTED, *random_texts(seed=1)]


# --- GPT-2's pre-tokenisation and byte table ------------------------------------------------

@pytest.mark.parametrize("text, pieces", [
    ("Hello  world's", ["Hello", " ", " world", "'s"]),             # the last space goes with the word
    ("I'll DON'T", ["I", "'ll", " DON", "'", "T"]),                 # contractions: lower case only
    ("a   b\n\n  x", ["a", "  ", " b", "\n\n ", " x"]),
    ("x 123 !!  ", ["x", " 123", " !!", "  "]),                     # a final run of spaces stays whole
    ("a\r\nb", ["a", "\r", "\n", "b"]),                             # \s+(?!\S) gives up the \n, \s+ takes it
    ("cafe\u0301 naïve", ["cafe", "\u0301", " naïve"]),             # a combining mark is not a letter
    ("৩৪ ½ 😀👍🏽 ok", ["৩৪", " ½", " 😀👍🏽", " ok"]),             # numbers of any script; emoji are 'other'
    ("<|endoftext|>", ["<|", "endoftext", "|>"]),
    ("\tx\u00a0y", ["\t", "x", "\u00a0", "y"]),                     # only a plain space joins the next piece
])
def test_pretokenize_cuts_as_worked_out_by_hand(text, pieces):
    assert pretokenize(text) == pieces


def test_pretokenize_keeps_every_character():
    for text in random_texts(seed=2):
        assert "".join(pretokenize(text)) == text


def test_byte_table_is_gpt2s():
    """188 visible Latin-1 bytes stand for themselves, the other 68 are U+0100.. in byte order."""
    assert len(set(BYTE_TO_CHARACTER)) == 256
    assert all(c.isprintable() and not c.isspace() for c in BYTE_TO_CHARACTER)
    assert bytes_to_characters(b" the\n") == "\u0120the\u010a"                  # "Ġthe" + "Ċ"
    assert bytes_to_characters("é".encode()) == "Ã©"
    assert bytes_to_characters(b"\x00\xad\xff") == "\u0100\u0143ÿ"
    assert characters_to_bytes(bytes_to_characters(bytes(range(256)))) == bytes(range(256))
    with pytest.raises(ValueError, match=r"'Ÿ' \(U\+0178\) stands for no byte"):
        characters_to_bytes("a\u0178")


# --- round trips and refusals ----------------------------------------------------------------

def test_byte_tokenizer_is_utf8():
    tokenizer = ByteTokenizer()
    for text in random_texts(seed=3):
        ids = tokenizer.encode(text)
        assert ids == list(text.encode("utf-8"))
        assert tokenizer.decode(ids) == text
    assert tokenizer.vocab_size == 256


def test_char_tokenizer_round_trip():
    texts = random_texts(seed=4)
    tokenizer = CharTokenizer.from_text("".join(texts))
    assert tokenizer.characters == sorted(set("".join(texts)))
    for text in texts:
        ids = tokenizer.encode(text)
        assert len(ids) == len(text) and tokenizer.decode(ids) == text


def test_char_tokenizer_refuses_an_unseen_character():
    tokenizer = CharTokenizer.from_text("hello")
    with pytest.raises(ValueError, match=r"text\[3\] is 'x' \(U\+0078, LATIN SMALL LETTER X\)"):
        tokenizer.encode("helxo")
    with pytest.raises(ValueError, match="at least one character"):
        CharTokenizer.from_text("")
    with pytest.raises(ValueError, match=r"characters: 'a' \(U\+0061.*more than once"):
        CharTokenizer(["a", "b", "a"])


def test_bpe_round_trip(trained):
    for text in [*CRAFTED, *random_texts(seed=5)]:
        ids = trained.encode(text)
        assert all(0 <= i < trained.vocab_size for i in ids)
        assert trained.decode(ids) == text


@pytest.mark.parametrize("kind", ["byte", "bpe"])
@pytest.mark.parametrize("text, position", [("ab\ud800c", 2), ("\udfff", 0), ("😀 \udc00", 2)])
def test_lone_surrogates_refused_by_position(kind, text, position, trained):
    tokenizer = ByteTokenizer() if kind == "byte" else trained
    code = ord(text[position])
    with pytest.raises(ValueError, match=rf"text\[{position}\] is '\\u{code:04x}' \(U\+{code:04X}, a lone "
                                         rf"surrogate\): it has no UTF-8 bytes"):
        tokenizer.encode(text)


def test_bpe_train_refuses_lone_surrogates_and_small_vocab():
    with pytest.raises(ValueError, match=r"text\[1\] is '\\ud800'"):
        BPETokenizer.train("a\ud800", 300)
    with pytest.raises(ValueError, match="vocab_size: expected an integer >= 256.*got 255"):
        BPETokenizer.train("abc", 255)


@pytest.mark.parametrize("kind", ["byte", "char", "bpe"])
def test_encode_refuses_bytes(kind, trained):
    tokenizer = {"byte": ByteTokenizer(), "char": CharTokenizer.from_text("abc"), "bpe": trained}[kind]
    with pytest.raises(TypeError, match="text: expected a str, got bytes"):
        tokenizer.encode(b"abc")


@pytest.mark.parametrize("build", [CharTokenizer.from_text, lambda text: BPETokenizer.train(text, 300)],
                         ids=["char", "bpe"])
def test_building_from_bytes_refused(build):
    with pytest.raises(TypeError, match="text: expected a str, got bytes"):
        build(b"abc")


@pytest.mark.parametrize("tokenizer", [ByteTokenizer(), CharTokenizer.from_text("abc")], ids=["byte", "char"])
def test_decode_refuses_bad_ids(tokenizer):
    with pytest.raises(ValueError, match=rf"ids\[1\] is {tokenizer.vocab_size}: expected an id in 0 \.\. "
                                         rf"{tokenizer.vocab_size - 1}"):
        tokenizer.decode([0, tokenizer.vocab_size])
    with pytest.raises(ValueError, match=r"ids\[0\] is -1"):
        tokenizer.decode(np.array([-1, 0]))
    with pytest.raises(ValueError, match=r"ids\[1\] is 1.0: expected an integer"):
        tokenizer.decode([0, 1.0])


def test_bpe_refuses_an_id_given_twice():
    vocab = {bytes([b]): b for b in range(256)}
    with pytest.raises(ValueError, match="id 65 is given to more than one token"):
        BPETokenizer(vocab, [], {"<|endoftext|>": 65})
    with pytest.raises(ValueError, match="id 7 is given to more than one token"):
        BPETokenizer({**vocab, b"ab": 7}, [(b"a", b"b")])


def test_bpe_decode_refuses_an_id_without_a_token():
    tokenizer = BPETokenizer({bytes([b]): b for b in range(256)}, [], {"<|endoftext|>": 300})
    assert tokenizer.vocab_size == 301 and tokenizer.decode([300, 104]) == "<|endoftext|>h"
    with pytest.raises(ValueError, match=r"ids\[1\] is 299: no token has this id"):
        tokenizer.decode([104, 299])
    with pytest.raises(ValueError, match=r"ids\[0\] is 301: expected an id in 0 \.\. 300"):
        tokenizer.decode([301])


# --- BPE: the algorithm ----------------------------------------------------------------------

def test_bpe_merges_worked_out_by_hand():
    """Training on "abab abc ab", by hand.

    Pre-tokens: "abab", " abc", " ab" (each once). Start from single bytes.
    1. pairs: (a,b) 2+1+1 = 4, ( ,a) 2, (b,a) 1, (b,c) 1      -> merge (a, b)      -> id 256 "ab"
       pre-tokens now [ab, ab], [ , ab, c], [ , ab]
    2. pairs: ( ,ab) 2, (ab,ab) 1, (ab,c) 1                   -> merge ( , ab)     -> id 257 " ab"
       pre-tokens now [ab, ab], [ ab, c], [ ab]
    3. pairs: (ab,ab) 1, ( ab,c) 1: a tie; the smaller pair wins, comparing the left tokens'
       bytes: b" ab" < b"ab" (a space sorts before "a")     -> merge ( ab, c)     -> id 258 " abc"
       (a rule of "first seen in the text" would have taken (ab, ab) here)
    4. pairs: (ab,ab) 1                                      -> merge (ab, ab)     -> id 259 "abab"
    5. no pair left: training stops at 260 tokens, even when asked for 300.
    Encoding the same text gives one token per pre-token: [259, 258, 257].
    """
    expected = [(b"a", b"b"), (b" ", b"ab"), (b" ab", b"c"), (b"ab", b"ab")]
    assert pretokenize("abab abc ab") == ["abab", " abc", " ab"]
    for vocab_size in (260, 300):
        tokenizer = BPETokenizer.train("abab abc ab", vocab_size)
        assert tokenizer.merges == expected
        assert tokenizer.vocab_size == 260
        assert [tokenizer.vocab[left + right] for left, right in expected] == [256, 257, 258, 259]
        assert tokenizer.encode("abab abc ab") == [259, 258, 257]
    assert BPETokenizer.train("abab abc ab", np.int64(258)).merges == expected[:2]
    assert learn_merges(Counter([b"abab", b" abc", b" ab"]), 300) == expected


def test_bpe_encodes_by_rank_not_left_to_right():
    """With merges [(b, c), (a, b)], "abc" is [a, bc]: (b, c) ranks first, though (a, b) comes first
    in the text; and (a, bc) is no merge, so it stays two tokens. "aaa" with (a, a) is [aa, a]."""
    vocab = {bytes([b]): b for b in range(256)}
    vocab.update({b"bc": 256, b"ab": 257, b"aa": 258})
    tokenizer = BPETokenizer(vocab, [(b"b", b"c"), (b"a", b"b"), (b"a", b"a")])
    assert tokenizer.encode("abc") == [ord("a"), 256]
    assert tokenizer.encode("abab") == [257, 257]
    assert tokenizer.encode("aaa") == [258, ord("a")]
    assert tokenizer.encode("aaaa") == [258, 258]


def test_incremental_training_gives_the_plain_loops_merges(corpus):
    """The speed trick changes nothing: on the corpus and on tiny alphabets (ties everywhere)."""
    counts = Counter(piece.encode() for piece in pretokenize(corpus[:20_000]))
    assert learn_merges_incremental(counts, 256 + 150) == learn_merges(counts, 256 + 150)
    rng = np.random.default_rng(8)
    for _ in range(200):
        counts = Counter()
        for _ in range(rng.integers(1, 8)):
            word = bytes(rng.choice(list(b"abc"[:rng.integers(1, 4)]), size=rng.integers(1, 9)))
            counts[word] += int(rng.integers(1, 5))
        assert learn_merges_incremental(counts, 256 + 30) == learn_merges(counts, 256 + 30)


def test_special_token_strings_are_ordinary_text(trained, tmp_path):
    trained.save_tiktoken(tmp_path / "ranks.tiktoken")
    tokenizer = BPETokenizer.from_tiktoken(tmp_path / "ranks.tiktoken")
    assert tokenizer.eot_id == trained.vocab_size and tokenizer.special_tokens == {"<|endoftext|>": 600}
    text = "a<|endoftext|>b <|endoftext|>"
    ids = tokenizer.encode(text)
    assert tokenizer.eot_id not in ids
    assert ids == trained.encode(text)
    assert tokenizer.decode(ids) == text
    assert tokenizer.decode([tokenizer.eot_id]) == "<|endoftext|>"
    assert trained.eot_id is None


# --- files -----------------------------------------------------------------------------------

def test_save_and_load_char_and_byte(tmp_path):
    chars = CharTokenizer.from_text("hé\U0001f600\ud800\n\x00")          # a lone surrogate is a character too
    chars.save(tmp_path / "char")
    loaded = load_tokenizer(tmp_path / "char")
    assert isinstance(loaded, CharTokenizer) and loaded.characters == chars.characters
    assert loaded.encode("\ud800é\n") == chars.encode("\ud800é\n")
    ByteTokenizer().save(tmp_path / "byte")
    assert isinstance(load_tokenizer(tmp_path / "byte"), ByteTokenizer)


def test_save_and_load_bpe(trained, tmp_path):
    trained.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["merges.txt", "vocab.json"]
    assert (tmp_path / "merges.txt").read_text().startswith("#version: 0.2\n")
    loaded = load_tokenizer(tmp_path)
    assert isinstance(loaded, BPETokenizer)
    assert (loaded.vocab, loaded.merges, loaded.special_tokens) == (trained.vocab, trained.merges, {})
    for text in random_texts(seed=9):
        assert loaded.encode(text) == trained.encode(text)


def test_files_ids_are_read_not_assumed(trained, tmp_path):
    """Ids shuffled in vocab.json: the merges keep their order, every token keeps its new id."""
    new_id = np.random.default_rng(10).permutation(trained.vocab_size + 1)
    shuffled = BPETokenizer({token: int(new_id[i]) for token, i in trained.vocab.items()}, trained.merges,
                            {"<|endoftext|>": int(new_id[-1])})
    shuffled.save(tmp_path)
    loaded = load_tokenizer(tmp_path)
    assert loaded.special_tokens == {"<|endoftext|>": int(new_id[-1])}
    for text in random_texts(seed=11):
        assert loaded.encode(text) == [int(new_id[i]) for i in trained.encode(text)]
    with pytest.raises(ValueError, match="ids do not follow its merges' order"):
        loaded.save_tiktoken(tmp_path / "shuffled.tiktoken")


def test_tiktoken_file_round_trip(trained, tmp_path):
    trained.save_tiktoken(tmp_path / "ranks.tiktoken")
    first = (tmp_path / "ranks.tiktoken").read_text().splitlines()[0]
    assert first == "AA== 0"                                            # base64 of b"\x00", rank 0
    loaded = BPETokenizer.from_tiktoken(tmp_path / "ranks.tiktoken")
    assert (loaded.vocab, loaded.merges) == (trained.vocab, trained.merges)
    assert loaded.vocab_size == trained.vocab_size + 1                   # "<|endoftext|>" after the last rank


def _tokenizer_json(tokenizer: BPETokenizer, merges_as_pairs: bool) -> dict:
    written = {bytes_to_characters(token): token_id for token, token_id in tokenizer.vocab.items()}
    merges = [[bytes_to_characters(left), bytes_to_characters(right)] for left, right in tokenizer.merges]
    return {
        "version": "1.0", "normalizer": None,
        "added_tokens": [{"id": token_id, "content": text, "special": True}
                         for text, token_id in tokenizer.special_tokens.items()],
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                          "use_regex": True},
        "decoder": {"type": "ByteLevel"},
        "model": {"type": "BPE", "dropout": None, "vocab": {**written, **tokenizer.special_tokens},
                  "merges": merges if merges_as_pairs else [" ".join(pair) for pair in merges]},
    }


@pytest.mark.parametrize("merges_as_pairs", [False, True], ids=["merges-as-strings", "merges-as-pairs"])
def test_tokenizer_json_read(trained, tmp_path, merges_as_pairs):
    trained.save_tiktoken(tmp_path / "ranks.tiktoken")
    with_eot = BPETokenizer.from_tiktoken(tmp_path / "ranks.tiktoken")
    (tmp_path / "tokenizer.json").write_text(json.dumps(_tokenizer_json(with_eot, merges_as_pairs)))
    loaded = load_tokenizer(tmp_path)
    assert (loaded.vocab, loaded.merges, loaded.special_tokens) == \
        (with_eot.vocab, with_eot.merges, with_eot.special_tokens)


@pytest.mark.parametrize("part, change, reason", [
    ("model", {"type": "Unigram"}, r"model.type is 'Unigram'"),
    ("model", {"type": "WordPiece"}, r"model.type is 'WordPiece'"),
    ("model", {"ignore_merges": True}, r"model.ignore_merges is True"),
    ("pre_tokenizer", {"add_prefix_space": True}, r"pre_tokenizer.add_prefix_space is True"),
    ("pre_tokenizer", {"type": "Sequence"}, r"pre_tokenizer.type is 'Sequence'"),
    ("normalizer", {"type": "NFC"}, r"has a normalizer \(NFC\)"),
])
def test_tokenizer_json_not_gpt2_like_refused(trained, tmp_path, part, change, reason):
    description = _tokenizer_json(trained, merges_as_pairs=False)
    description[part] = {**(description[part] or {}), **change}
    (tmp_path / "tokenizer.json").write_text(json.dumps(description))
    with pytest.raises(ValueError, match=reason + ".*byte-level BPE only"):
        load_tokenizer(tmp_path)


def test_load_tokenizer_refuses_what_it_cannot_read(tmp_path):
    (tmp_path / "tokenizer.model").write_bytes(b"\x0a\x0bsentencepiece")
    with pytest.raises(ValueError, match="SentencePiece tokenizer.model.*byte-level BPE only"):
        load_tokenizer(tmp_path)
    with pytest.raises(FileNotFoundError, match="no tokenizer here"):
        load_tokenizer(tmp_path / "nothing")
    (tmp_path / "own").mkdir()
    (tmp_path / "own" / "tinytransformer_tokenizer.json").write_text('{"type": "word"}')
    with pytest.raises(ValueError, match="type is 'word', expected 'char' or 'byte'"):
        load_tokenizer(tmp_path / "own")


def test_bpe_files_refused_clearly(tmp_path):
    vocab = {bytes_to_characters(bytes([b])): b for b in range(256)}
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    (tmp_path / "merges.txt").write_text("#version: 0.2\na b c\n")
    with pytest.raises(ValueError, match=r"merges.txt, line 2: expected 'left right'.*'a b c'"):
        load_tokenizer(tmp_path)
    (tmp_path / "merges.txt").write_text("#version: 0.2\na b\n")
    with pytest.raises(ValueError, match=r"merges\[0\] is \(b'a', b'b'\): b'ab' is not in vocab"):
        load_tokenizer(tmp_path)
    del vocab["Ġ"]
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    with pytest.raises(ValueError, match=r"vocab: lacks the single byte b' '"):
        load_tokenizer(tmp_path)


# --- the reference tokenizers, on our trained BPE ---------------------------------------------

@pytest.mark.parametrize("name", ["GPT2Tokenizer", "GPT2TokenizerFast"])
def test_trained_bpe_loads_in_transformers_with_equal_ids(trained, tmp_path, corpus_sample, name):
    transformers = pytest.importorskip("transformers", reason="transformers is an optional reference")
    trained.save(tmp_path)
    reference = getattr(transformers, name).from_pretrained(tmp_path, split_special_tokens=True)
    for text in texts_to_compare(corpus_sample):
        assert reference(text)["input_ids"] == trained.encode(text), text


def test_trained_bpe_loads_in_tokenizers_with_equal_ids(trained, tmp_path, corpus_sample):
    tokenizers = pytest.importorskip("tokenizers", reason="the tokenizers library is an optional reference")
    trained.save(tmp_path)
    reference = tokenizers.ByteLevelBPETokenizer(str(tmp_path / "vocab.json"), str(tmp_path / "merges.txt"))
    for text in texts_to_compare(corpus_sample):
        assert reference.encode(text).ids == trained.encode(text), text
    (tmp_path / "hf").mkdir()
    reference.save(str(tmp_path / "hf" / "tokenizer.json"))
    from_their_file = load_tokenizer(tmp_path / "hf")
    assert (from_their_file.vocab, from_their_file.merges) == (trained.vocab, trained.merges)


def _tiktoken_gpt2_encoding(ranks: dict[bytes, int], name: str):
    tiktoken = pytest.importorskip("tiktoken", reason="tiktoken is an optional reference")
    from tiktoken_ext.openai_public import r50k_pat_str        # GPT-2's pattern, as tiktoken writes it
    return tiktoken.Encoding(name=name, pat_str=r50k_pat_str, mergeable_ranks=ranks,
                             special_tokens={"<|endoftext|>": max(ranks.values()) + 1})


def test_trained_bpe_equals_tiktoken_on_its_ranks(trained, tmp_path, corpus_sample):
    encoding = _tiktoken_gpt2_encoding(trained.vocab, "trained")
    for text in texts_to_compare(corpus_sample):
        assert encoding.encode_ordinary(text) == trained.encode(text), text
    from tiktoken.load import load_tiktoken_bpe
    trained.save_tiktoken(tmp_path / "ranks.tiktoken")
    assert load_tiktoken_bpe(str(tmp_path / "ranks.tiktoken")) == trained.vocab


# --- GPT-2's own tokenizer -------------------------------------------------------------------

HAS_GPT2 = (GPT2_DIR / "vocab.json").is_file() and (GPT2_DIR / "gpt2.tiktoken").is_file()
needs_gpt2 = pytest.mark.skipif(not HAS_GPT2, reason=f"GPT-2's tokenizer files are not in {GPT2_DIR}: "
                                                     f"run python {FETCH_SCRIPT}")


@pytest.fixture(scope="module")
def gpt2_files() -> Path:
    return GPT2_DIR


@pytest.fixture(scope="module")
def gpt2(gpt2_files) -> BPETokenizer:
    return BPETokenizer.from_pretrained(gpt2_files)


@pytest.fixture(scope="module")
def gpt2_from_ranks(gpt2_files) -> BPETokenizer:
    return BPETokenizer.from_tiktoken(gpt2_files / "gpt2.tiktoken")


@needs_gpt2
def test_gpt2_from_pretrained_and_from_tiktoken_agree(gpt2, gpt2_from_ranks):
    from_ranks = gpt2_from_ranks
    for tokenizer in (gpt2, from_ranks):
        assert tokenizer.vocab_size == 50257 and tokenizer.eot_id == 50256
        assert tokenizer.special_tokens == {"<|endoftext|>": 50256}
    assert (from_ranks.vocab, from_ranks.merges) == (gpt2.vocab, gpt2.merges)
    assert gpt2.encode("Hello world") == [15496, 995] and gpt2.encode(" Hello world") == [18435, 995]


@needs_gpt2
@pytest.mark.parametrize("name", ["GPT2Tokenizer", "GPT2TokenizerFast"])
def test_gpt2_equals_transformers(gpt2, gpt2_files, corpus_sample, name):
    transformers = pytest.importorskip("transformers", reason="transformers is an optional reference")
    reference = getattr(transformers, name).from_pretrained(gpt2_files, split_special_tokens=True)
    for text in texts_to_compare(corpus_sample):
        ids = gpt2.encode(text)
        assert reference(text)["input_ids"] == ids, text
        assert gpt2.decode(ids) == text


@needs_gpt2
def test_gpt2_equals_tiktoken(gpt2_files, gpt2_from_ranks, corpus_sample):
    pytest.importorskip("tiktoken", reason="tiktoken is an optional reference")
    from tiktoken.load import load_tiktoken_bpe
    encoding = _tiktoken_gpt2_encoding(load_tiktoken_bpe(str(gpt2_files / "gpt2.tiktoken")), "gpt2-ranks")
    for text in texts_to_compare(corpus_sample):
        assert encoding.encode_ordinary(text) == gpt2_from_ranks.encode(text), text
