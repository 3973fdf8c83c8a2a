"""GPT-2's pre-tokenisation: the text is cut into pieces first, and BPE merges only inside a piece.

The pattern, alternative by alternative (the first that matches at a position wins):

    's|'t|'re|'ve|'m|'ll|'d     an English contraction's ending, on its own ("don't" -> "don", "'t")
    ` ?\\p{L}+`                 a run of letters, with the one space before it (" world")
    ` ?\\p{N}+`                 a run of digits or other numbers, with the one space before it
    ` ?[^\\s\\p{L}\\p{N}]+`       a run of anything else (punctuation, symbols, emoji), same space rule
    `\\s+(?!\\S)`                whitespace, except the last space before a non-space character,
                              which the next piece takes: "a   b" -> "a", "  ", " b"
    `\\s+`                      whatever whitespace is left (a run at the end of the text)

So a token never spans a word boundary, and " the" (with its space) is one token
where "the" at the start of a line is another. ``\\p{L}`` (any letter) and ``\\p{N}``
(any number) are Unicode classes that Python's ``re`` does not have: the ``regex``
package provides them (GPT-2's own encoder used it). Libraries agree on every
character except ones a newer Unicode version assigned (``regex`` may call a letter
what an older table still calls unassigned).

The pieces concatenate back to the text: nothing is dropped.
"""

from __future__ import annotations

import regex

__all__ = ["GPT2_PATTERN", "pretokenize"]

GPT2_PATTERN = regex.compile(
    r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")


def pretokenize(text: str) -> list[str]:
    """The pieces GPT-2 cuts ``text`` into, in order: "Hello  world's" -> ["Hello", " ", " world", "'s"]."""
    return GPT2_PATTERN.findall(text)
