"""GPT-2's byte-to-character table: how byte-level tokens are written in vocab.json and merges.txt.

A byte-level token is a byte string, often not valid UTF-8 on its own (half of
"é"), and often invisible (a space, a newline). The files are text, so each of
the 256 bytes is written as one visible character:

- the 188 bytes that are visible characters in Latin-1 ('!'..'~', '¡'..'¬', '®'..'ÿ')
  stand for themselves;
- the other 68 (control codes, the space, DEL, the no-break space, the soft hyphen)
  are written as U+0100, U+0101, ... in byte order: the space 0x20 is 'Ġ' (U+0120),
  the newline 0x0A is 'Ċ' (U+010A).

So the token b" the" is written "Ġthe", and b"\\xc3\\xa9" ("é") is written "Ã©".
"""

from __future__ import annotations

__all__ = ["BYTE_TO_CHARACTER", "CHARACTER_TO_BYTE", "bytes_to_characters", "characters_to_bytes"]


def _byte_characters() -> tuple[str, ...]:
    visible = {*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)}
    characters, n_shifted = [], 0
    for byte in range(256):
        if byte in visible:
            characters.append(chr(byte))
        else:
            characters.append(chr(256 + n_shifted))
            n_shifted += 1
    return tuple(characters)


BYTE_TO_CHARACTER: tuple[str, ...] = _byte_characters()          # 256 one-character strings
CHARACTER_TO_BYTE: dict[str, int] = {c: byte for byte, c in enumerate(BYTE_TO_CHARACTER)}


def bytes_to_characters(token: bytes) -> str:
    """b" the" -> "Ġthe": a token as vocab.json and merges.txt write it."""
    return "".join(BYTE_TO_CHARACTER[byte] for byte in token)


def characters_to_bytes(written: str) -> bytes:
    """"Ġthe" -> b" the", refusing a character that stands for no byte."""
    try:
        return bytes(CHARACTER_TO_BYTE[c] for c in written)
    except KeyError as err:
        raise ValueError(f"{written!r}: {err.args[0]!r} (U+{ord(err.args[0]):04X}) stands for no byte in "
                         f"GPT-2's byte-to-character table, so this is not a byte-level BPE token") from None
