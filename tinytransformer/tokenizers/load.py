"""load_tokenizer: one way in, for a folder written by ``save`` or a Hugging Face folder."""

from __future__ import annotations

from pathlib import Path

from .bpe_tokenizer import BPETokenizer
from .byte import ByteTokenizer
from .char import CharTokenizer
from .files import OWN_TOKENIZER_FILE, read_own_tokenizer_file

__all__ = ["load_tokenizer"]


def load_tokenizer(directory):
    """The tokenizer kept in ``directory``, whichever it is:

    - ``tinytransformer_tokenizer.json`` (what ``CharTokenizer.save``/``ByteTokenizer.save`` write);
    - ``vocab.json`` + ``merges.txt`` (``BPETokenizer.save``, GPT-2's Hugging Face folder), or a
      ``tokenizer.json`` whose model is byte-level BPE: a ``BPETokenizer``.

    A folder holding only a SentencePiece ``tokenizer.model`` (LLaMA's own format) is refused:
    it is a protobuf of pieces and scores that this package does not read.
    """
    directory = Path(directory)
    if (directory / OWN_TOKENIZER_FILE).is_file():
        description = read_own_tokenizer_file(directory)
        if description.get("type") == "char":
            return CharTokenizer(description["characters"])
        if description.get("type") == "byte":
            return ByteTokenizer()
        raise ValueError(f"{directory / OWN_TOKENIZER_FILE}: type is {description.get('type')!r}, "
                         f"expected 'char' or 'byte'")
    has = {name for name in ("vocab.json", "merges.txt", "tokenizer.json", "tokenizer.model")
           if (directory / name).is_file()}
    if {"vocab.json", "merges.txt"} <= has or "tokenizer.json" in has:
        return BPETokenizer.from_pretrained(directory)
    if "tokenizer.model" in has:
        raise ValueError(f"{directory}: holds a SentencePiece tokenizer.model and no tokenizer.json or "
                         f"vocab.json + merges.txt; this package reads byte-level BPE only, not "
                         f"SentencePiece")
    raise FileNotFoundError(f"{directory}: no tokenizer here (looked for {OWN_TOKENIZER_FILE}, vocab.json + "
                            f"merges.txt, tokenizer.json)")
