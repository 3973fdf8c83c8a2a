"""Bytes as tokens: the 256 byte values of the text's UTF-8 encoding."""

from __future__ import annotations

from .files import write_own_tokenizer_file
from .token_ids import check_token_ids
from .utf8 import utf8_bytes, utf8_text

__all__ = ["ByteTokenizer"]


class ByteTokenizer:
    """Token id b is the byte b: "é" is [195, 169], its two UTF-8 bytes.

    Any text encodes (a lone surrogate aside: it has no UTF-8 bytes), with no vocabulary
    to learn, at the price of longer sequences than characters or BPE give.

    >>> ByteTokenizer().encode("hé")
    [104, 195, 169]
    """

    vocab_size = 256

    def encode(self, text: str) -> list[int]:
        return list(utf8_bytes(text))

    def decode(self, ids) -> str:
        return utf8_text(bytes(check_token_ids(ids, self.vocab_size)))

    def save(self, directory) -> None:
        """Write a file saying this is a byte tokenizer; ``load_tokenizer(directory)`` reads it back."""
        write_own_tokenizer_file(directory, {"type": "byte"})
