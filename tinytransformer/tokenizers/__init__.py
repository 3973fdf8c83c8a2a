"""Tokenizers: text to token ids and back.

- ``CharTokenizer``: one id per distinct character of a text;
- ``ByteTokenizer``: the 256 byte values of UTF-8;
- ``BPETokenizer``: byte-level byte-pair encoding as GPT-2's, trained here
  (``BPETokenizer.train``) or read from GPT-2's files (``from_pretrained``, ``from_tiktoken``).

Each has ``encode(text) -> list[int]``, ``decode(ids) -> str``, ``vocab_size`` and
``save(directory)``; ``load_tokenizer(directory)`` reads any of them back, and a
Hugging Face folder's byte-level BPE too.
"""

from .bpe_tokenizer import BPETokenizer
from .byte import ByteTokenizer
from .char import CharTokenizer
from .load import load_tokenizer

__all__ = ["BPETokenizer", "ByteTokenizer", "CharTokenizer", "load_tokenizer"]
