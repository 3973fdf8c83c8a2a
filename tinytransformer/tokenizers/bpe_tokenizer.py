"""BPETokenizer: byte-level BPE as GPT-2's, trained here or read from GPT-2's files."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from . import files
from .bpe import apply_merges, learn_merges_incremental, single_bytes
from .gpt2_pattern import pretokenize
from .token_ids import check_token_ids
from .utf8 import utf8_bytes, utf8_text

__all__ = ["BPETokenizer", "END_OF_TEXT"]

END_OF_TEXT = "<|endoftext|>"

Pair = tuple[bytes, bytes]


class BPETokenizer:
    """Byte-level BPE: text -> GPT-2's pre-tokens -> UTF-8 bytes -> merges applied by rank -> ids.

    ``vocab``: token bytes -> id, holding all 256 single bytes and every merge's result.
    ``merges``: (left, right) pairs in rank order (``bpe.py`` says how they are learned
    and applied). ``special_tokens``: text -> id, for ids that stand for no bytes
    (GPT-2: ``{"<|endoftext|>": 50256}``); ``eot_id`` is that id, or None.

    ``encode`` reads special-token strings as ordinary text ("<|endoftext|>" in a text
    is 6 ordinary tokens, as tiktoken's ``encode_ordinary`` reads it): a text cannot
    smuggle a control token into a prompt. Put ``eot_id`` in by hand where it belongs.

    ``vocab_size`` is 1 + the largest id (the rows an embedding needs), and
    ``decode(encode(text)) == text`` for every text with no lone surrogate.

    Speed: ``encode`` caches each distinct pre-token's ids (a text's words repeat),
    and ``train`` uses ``learn_merges_incremental``.
    """

    def __init__(self, vocab: dict[bytes, int], merges: list[Pair],
                 special_tokens: dict[str, int] | None = None):
        self.vocab = dict(vocab)
        self.merges = [tuple(pair) for pair in merges]
        self.special_tokens = dict(special_tokens or {})
        missing = [byte for byte in range(256) if bytes([byte]) not in self.vocab]
        if missing:
            raise ValueError(f"vocab: lacks the single byte {bytes([missing[0]])!r} ({len(missing)} of the "
                             f"256 are missing); a byte-level BPE needs all 256 to encode any text")
        for rank, (left, right) in enumerate(self.merges):
            for token in (left, right, left + right):
                if token not in self.vocab:
                    raise ValueError(f"merges[{rank}] is ({left!r}, {right!r}): {token!r} is not in vocab")
        self._token_of = {token_id: token for token, token_id in self.vocab.items()}
        for text, token_id in self.special_tokens.items():
            self._token_of[token_id] = text.encode("utf-8")
        all_ids = Counter([*self.vocab.values(), *self.special_tokens.values()])
        if len(self._token_of) != all_ids.total():
            repeated = next(token_id for token_id, count in all_ids.items() if count > 1)
            raise ValueError(f"vocab and special_tokens: id {repeated} is given to more than one token")
        if min(all_ids) < 0:
            raise ValueError(f"vocab and special_tokens: ids must be >= 0, got {min(all_ids)}")
        self.vocab_size = max(all_ids) + 1
        # a pair listed twice keeps its first (lowest) rank
        self._merge_ranks = {}
        for rank, pair in enumerate(self.merges):
            self._merge_ranks.setdefault(pair, rank)
        self._ids_of_pre_token: dict[str, list[int]] = {}

    @property
    def eot_id(self) -> int | None:
        """The id of "<|endoftext|>" (GPT-2's 50256: the end of a document), or None without one."""
        return self.special_tokens.get(END_OF_TEXT)

    # --- building ----------------------------------------------------------------------------

    @classmethod
    def train(cls, text: str, vocab_size: int) -> "BPETokenizer":
        """Learn merges from ``text`` until there are ``vocab_size`` tokens (fewer if the text runs out
        of pairs). Ids: byte b is id b, then each new token in the order it was learned.
        No special tokens."""
        utf8_bytes(text)                    # refuse a lone surrogate by its place in the text
        pre_token_counts = Counter(piece.encode("utf-8") for piece in pretokenize(text))
        merges = learn_merges_incremental(pre_token_counts, vocab_size)
        vocab = {bytes([byte]): byte for byte in range(256)}
        for left, right in merges:
            vocab.setdefault(left + right, len(vocab))
        return cls(vocab, merges)

    @classmethod
    def from_pretrained(cls, directory) -> "BPETokenizer":
        """A Hugging Face folder's tokenizer: vocab.json + merges.txt, else a byte-level BPE
        tokenizer.json."""
        directory = Path(directory)
        if (directory / "vocab.json").is_file() and (directory / "merges.txt").is_file():
            return cls(*files.read_vocab_and_merges(directory))
        if (directory / "tokenizer.json").is_file():
            return cls(*files.read_tokenizer_json(directory / "tokenizer.json"))
        found = sorted(p.name for p in directory.iterdir()) if directory.is_dir() else "no folder"
        raise FileNotFoundError(f"{directory}: expected vocab.json + merges.txt or tokenizer.json, "
                                f"found {found}")

    @classmethod
    def from_tiktoken(cls, path) -> "BPETokenizer":
        """A .tiktoken ranks file, read as GPT-2's: a token's rank is its id and its priority,
        and "<|endoftext|>" comes after the last rank (GPT-2's ranks give vocab_size 50257).

        The file lists tokens, not merges: each token's merge is found by encoding its own bytes
        with the merges of lower rank, which must leave exactly two tokens. (tiktoken itself joins
        any two neighbours whose concatenation has a rank, lowest first: in principle more than
        the merges, e.g. (a, bc) where only (ab, c) made "abc". On GPT-2's ranks and on ranks
        trained here the ids are tested equal to tiktoken's.)
        """
        ranks = files.read_tiktoken(path)
        merges, merge_ranks = [], {}
        for token, rank in sorted(ranks.items(), key=lambda entry: entry[1]):
            if len(token) == 1:
                continue
            parts = apply_merges(single_bytes(token), merge_ranks)
            if len(parts) != 2:
                raise ValueError(f"{path}: token {token!r} (rank {rank}) is not the merge of two tokens of "
                                 f"lower rank (they make {parts!r}), so this is not a BPE ranks file")
            merge_ranks[tuple(parts)] = len(merges)
            merges.append(tuple(parts))
        return cls(ranks, merges, {END_OF_TEXT: max(ranks.values()) + 1})

    # --- the tokenizer -----------------------------------------------------------------------

    def encode(self, text: str) -> list[int]:
        """Text -> ids, special-token strings read as ordinary text; a lone surrogate is refused
        (``ValueError`` naming its position)."""
        utf8_bytes(text)                    # refuse a lone surrogate by its place in the text
        ids = []
        for piece in pretokenize(text):
            if piece not in self._ids_of_pre_token:
                tokens = apply_merges(single_bytes(piece.encode("utf-8")), self._merge_ranks)
                self._ids_of_pre_token[piece] = [self.vocab[token] for token in tokens]
            ids.extend(self._ids_of_pre_token[piece])
        return ids

    def decode(self, ids) -> str:
        """Ids -> the text of their bytes (U+FFFD where they cut a character); a special token's
        id gives its text."""
        tokens = []
        for position, token_id in enumerate(check_token_ids(ids, self.vocab_size)):
            if token_id not in self._token_of:
                raise ValueError(f"ids[{position}] is {token_id}: no token has this id")
            tokens.append(self._token_of[token_id])
        return utf8_text(b"".join(tokens))

    # --- files -------------------------------------------------------------------------------

    def save(self, directory) -> None:
        """Write vocab.json + merges.txt (GPT-2's files: transformers' GPT2Tokenizer reads them)."""
        files.write_vocab_and_merges(directory, self.vocab, self.merges, self.special_tokens)

    def save_tiktoken(self, path) -> None:
        """Write the ranks as a .tiktoken file (``from_tiktoken`` reads it back).

        The format has room only for tokenizers whose ids are their merge order (each merge
        makes a new token, with a larger id than the merges before it) and whose one special
        token, if any, is "<|endoftext|>" right after the last rank, as GPT-2's.
        """
        made = [self.vocab[left + right] for left, right in self.merges]
        if len(set(made)) != len(made) or made != sorted(made):
            raise ValueError("this tokenizer's ids do not follow its merges' order (or two merges make one "
                             "token), so a .tiktoken file, whose ranks are both ids and priorities, "
                             "cannot hold it")
        after_last = max(self.vocab.values()) + 1
        if self.special_tokens not in ({}, {END_OF_TEXT: after_last}):
            raise ValueError(f"special_tokens: a .tiktoken file holds only {END_OF_TEXT!r} = {after_last} "
                             f"(after the last rank), got {self.special_tokens}")
        files.write_tiktoken(path, self.vocab)
