"""Tokenizer files, read and written as data.

- ``vocab.json`` + ``merges.txt`` (GPT-2's files, as Hugging Face folders keep them):
  vocab.json maps each token, written with GPT-2's byte-to-character table
  ("Ġthe" is b" the"), to its id; merges.txt lists the merges in rank order, one
  "left right" per line after a "#version" line. A vocab.json entry that is neither
  one byte nor made by a merge is a special token, written as its own text
  ("<|endoftext|>"). Ids are read, never assumed: nothing requires them to follow
  the merges' order.
- ``tokenizer.json`` (Hugging Face's one-file form): the same vocabulary and merges
  under "model", special tokens under "added_tokens", and the pre-tokenizer and
  normalizer that say whether it is GPT-2's kind of tokenizer at all.
- ``.tiktoken`` (tiktoken's form): one "base64(token) rank" per line. A token's rank
  is both its id and its merge priority; special tokens are not in the file.
- ``tinytransformer_tokenizer.json``: this package's own small file for the character
  and byte tokenizers ({"type": "char", "characters": [...]} or {"type": "byte"}).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

from ..atomic import atomic_write
from .byte_characters import bytes_to_characters, characters_to_bytes

__all__ = ["OWN_TOKENIZER_FILE", "read_own_tokenizer_file", "read_tiktoken", "read_tokenizer_json",
           "read_vocab_and_merges", "write_own_tokenizer_file", "write_tiktoken", "write_vocab_and_merges"]

OWN_TOKENIZER_FILE = "tinytransformer_tokenizer.json"

Pair = tuple[bytes, bytes]


def _write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def write_own_tokenizer_file(directory, description: dict) -> None:
    _write_text(Path(directory) / OWN_TOKENIZER_FILE, json.dumps(description, indent=1) + "\n")


def read_own_tokenizer_file(directory) -> dict:
    return json.loads((Path(directory) / OWN_TOKENIZER_FILE).read_text(encoding="utf-8"))


def _split_vocabulary(written_vocab: dict[str, int], merges: list[Pair], source: str):
    """vocab.json's entries -> (byte tokens -> id, special tokens -> id): a special token is an entry
    that is not one byte and that no merge makes."""
    made = {left + right for left, right in merges}
    vocab, special_tokens = {}, {}
    for written, token_id in written_vocab.items():
        if isinstance(token_id, bool) or not isinstance(token_id, int):
            raise ValueError(f"{source}: the id of {written!r} is {token_id!r}, expected an integer")
        try:
            token = characters_to_bytes(written)
        except ValueError:
            token = None
        if token is not None and (len(token) == 1 or token in made):
            vocab[token] = token_id
        else:
            special_tokens[written] = token_id
    return vocab, special_tokens


def _parse_merge(line: str, source: str) -> Pair:
    parts = line.split(" ")
    if len(parts) != 2 or not all(parts):
        raise ValueError(f"{source}: expected 'left right' (two tokens and one space), got {line!r}")
    try:
        return characters_to_bytes(parts[0]), characters_to_bytes(parts[1])
    except ValueError as err:
        raise ValueError(f"{source}: {err}") from None


def read_vocab_and_merges(directory):
    """A folder's vocab.json + merges.txt -> (vocab: bytes -> id, merges in rank order,
    special tokens: text -> id)."""
    directory = Path(directory)
    written_vocab = json.loads((directory / "vocab.json").read_text(encoding="utf-8"))
    merges = []
    lines = (directory / "merges.txt").read_text(encoding="utf-8").split("\n")
    for line_number, line in enumerate(lines, start=1):
        if line and not (line_number == 1 and line.startswith("#version")):
            merges.append(_parse_merge(line, f"{directory / 'merges.txt'}, line {line_number}"))
    vocab, special_tokens = _split_vocabulary(written_vocab, merges, str(directory / "vocab.json"))
    return vocab, merges, special_tokens


def write_vocab_and_merges(directory, vocab: dict[bytes, int], merges: list[Pair],
                           special_tokens: dict[str, int]) -> None:
    """The inverse of ``read_vocab_and_merges``; transformers' GPT2Tokenizer reads these files."""
    written_vocab = {bytes_to_characters(token): token_id for token, token_id in vocab.items()}
    for text, token_id in special_tokens.items():
        if text in written_vocab:
            raise ValueError(f"special_tokens: {text!r} is also how vocab.json writes an ordinary token")
        written_vocab[text] = token_id
    in_id_order = dict(sorted(written_vocab.items(), key=lambda entry: entry[1]))
    directory = Path(directory)
    _write_text(directory / "vocab.json", json.dumps(in_id_order, ensure_ascii=False, indent=0) + "\n")
    lines = [f"{bytes_to_characters(left)} {bytes_to_characters(right)}" for left, right in merges]
    _write_text(directory / "merges.txt", "\n".join(["#version: 0.2", *lines]) + "\n")


# What a tokenizer.json must say to be GPT-2's kind of tokenizer: (where, key, value it must have,
# the key's default when absent). Anything else would cut or change the text before BPE differently.
_GPT2_LIKE = [
    ("model", "type", "BPE", None),
    ("model", "dropout", None, None),
    ("model", "continuing_subword_prefix", "", ""),
    ("model", "end_of_word_suffix", "", ""),
    ("model", "ignore_merges", False, False),
    ("model", "byte_fallback", False, False),
    ("pre_tokenizer", "type", "ByteLevel", None),
    ("pre_tokenizer", "use_regex", True, True),
    ("pre_tokenizer", "add_prefix_space", False, False),
]


def read_tokenizer_json(path):
    """A byte-level BPE tokenizer.json -> (vocab, merges, special tokens), as ``read_vocab_and_merges``.

    Refused with the reason: another model (WordPiece, Unigram), a normalizer, or a
    pre-tokenizer other than GPT-2's (byte-level, its pattern, no added prefix space).
    """
    path = Path(path)
    description = json.loads(path.read_text(encoding="utf-8"))
    if description.get("normalizer") is not None:
        raise ValueError(f"{path}: has a normalizer ({description['normalizer'].get('type')}), which GPT-2's "
                         f"byte-level BPE does not have; this package reads byte-level BPE only")
    for part, key, expected, default in _GPT2_LIKE:
        value = (description.get(part) or {}).get(key, default)
        if value != expected:
            raise ValueError(f"{path}: {part}.{key} is {value!r} where GPT-2's byte-level BPE has "
                             f"{expected!r}; this package reads byte-level BPE only")
    model = description["model"]
    merges = [_parse_merge(merge if isinstance(merge, str) else " ".join(merge), f"{path}, merges[{i}]")
              for i, merge in enumerate(model["merges"])]
    added = {token["content"]: token["id"] for token in description.get("added_tokens", [])}
    written_vocab = {written: token_id for written, token_id in model["vocab"].items()
                     if written not in added}
    vocab, special_tokens = _split_vocabulary(written_vocab, merges, f"{path}, model.vocab")
    return vocab, merges, {**special_tokens, **added}


def read_tiktoken(path) -> dict[bytes, int]:
    """A .tiktoken file -> token bytes -> rank."""
    ranks = {}
    for line_number, line in enumerate(Path(path).read_text(encoding="ascii").splitlines(), start=1):
        if not line:
            continue
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            raise ValueError(f"{path}, line {line_number}: expected 'base64(token) rank', got {line!r}")
        token = base64.b64decode(parts[0], validate=True)
        if token in ranks:
            raise ValueError(f"{path}, line {line_number}: token {token!r} already has rank {ranks[token]}")
        ranks[token] = int(parts[1])
    return ranks


def write_tiktoken(path, ranks: dict[bytes, int]) -> None:
    """token bytes -> rank, written as tiktoken's ``load_tiktoken_bpe`` reads it, in rank order."""
    lines = [f"{base64.b64encode(token).decode('ascii')} {rank}"
             for token, rank in sorted(ranks.items(), key=lambda entry: entry[1])]
    _write_text(Path(path), "\n".join(lines) + "\n")
