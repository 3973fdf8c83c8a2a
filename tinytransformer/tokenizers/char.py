"""Characters as tokens: one id per distinct character of a text."""

from __future__ import annotations

from .files import write_own_tokenizer_file
from .token_ids import check_token_ids
from .utf8 import check_text, describe_character

__all__ = ["CharTokenizer"]


class CharTokenizer:
    """Token id i is the i-th character of ``characters``.

    ``CharTokenizer.from_text(text)`` takes the distinct characters of a text in code point
    order, so the ids do not depend on where a character first appears. A character the
    tokenizer has not seen cannot be encoded (``ValueError`` naming it and its position).

    >>> tokenizer = CharTokenizer.from_text("hello")
    >>> tokenizer.encode("hole"), tokenizer.vocab_size
    ([1, 3, 2, 0], 4)
    """

    def __init__(self, characters):
        characters = list(characters)
        for position, char in enumerate(characters):
            if not isinstance(char, str) or len(char) != 1:
                raise ValueError(f"characters[{position}] is {char!r}: expected a string of one character")
        if not characters:
            raise ValueError("characters: expected at least one character, got none")
        self.characters = characters
        self._ids = {char: token_id for token_id, char in enumerate(characters)}
        if len(self._ids) != len(characters):
            repeated = next(char for char in characters if characters.count(char) > 1)
            raise ValueError(f"characters: {describe_character(repeated)} appears more than once")

    @classmethod
    def from_text(cls, text: str) -> "CharTokenizer":
        """A tokenizer of the distinct characters of ``text``, in code point order."""
        check_text(text)
        if not text:
            raise ValueError("text: expected at least one character to build a vocabulary from, got ''")
        return cls(sorted(set(text)))

    @property
    def vocab_size(self) -> int:
        return len(self.characters)

    def encode(self, text: str) -> list[int]:
        check_text(text)
        try:
            return [self._ids[char] for char in text]
        except KeyError as err:
            position = text.index(err.args[0])
            raise ValueError(f"text[{position}] is {describe_character(err.args[0])}, which is not one of "
                             f"this CharTokenizer's {self.vocab_size} characters") from None

    def decode(self, ids) -> str:
        return "".join(self.characters[token_id] for token_id in check_token_ids(ids, self.vocab_size))

    def save(self, directory) -> None:
        """Write the characters into ``directory``; ``load_tokenizer(directory)`` reads them back."""
        write_own_tokenizer_file(directory, {"type": "char", "characters": self.characters})
