"""Text to UTF-8 bytes and back, the first and last step of the byte-level tokenizers.

Every Python string of real characters has a UTF-8 encoding, so a byte-level
tokenizer can encode any text. The exception is a lone surrogate (U+D800..U+DFFF
on its own, e.g. from ``"\\ud83d"`` or a file read with ``errors="surrogateescape"``):
it is half of a UTF-16 pair, not a character, and UTF-8 has no bytes for it.
"""

from __future__ import annotations

import unicodedata

__all__ = ["check_text", "describe_character", "utf8_bytes", "utf8_text"]


def describe_character(char: str) -> str:
    """'\\ud800' (U+D800, a lone surrogate), 'é' (U+00E9): for error messages."""
    name = unicodedata.name(char, "a lone surrogate" if 0xD800 <= ord(char) <= 0xDFFF else "unnamed")
    return f"{char!r} (U+{ord(char):04X}, {name})"


def check_text(text) -> None:
    """Refuse anything but a str (bytes read from a file in binary mode, say) by its type."""
    if not isinstance(text, str):
        raise TypeError(f"text: expected a str, got {type(text).__name__}")


def utf8_bytes(text: str) -> bytes:
    """``text.encode("utf-8")``, refusing a lone surrogate by its position in ``text``."""
    check_text(text)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise ValueError(f"text[{err.start}] is {describe_character(text[err.start])}: it has no UTF-8 "
                         f"bytes, so a byte-level tokenizer cannot encode it") from None


def utf8_text(data: bytes) -> str:
    """``data.decode("utf-8", errors="replace")``: ids that end inside a character (a model can
    generate any sequence) decode to U+FFFD there, as GPT-2's and tiktoken's decoders do."""
    return data.decode("utf-8", errors="replace")
