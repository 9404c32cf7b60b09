"""The character tokenizer: every distinct character of the corpus is one token.

A character-level model needs no learned vocabulary: sort the characters that occur, number them,
and a string becomes a list of small integers. The vocabulary is stored in checkpoints as a plain
string (no pickle), so ``CharTokenizer(checkpoint["vocab"])`` rebuilds it exactly.
"""

from __future__ import annotations

from collections.abc import Iterable

from chargpt_tui.errors import UserError


class UnknownCharacterError(UserError):
    """Text contains characters the model never saw in training."""

    def __init__(self, unknown: str) -> None:
        self.unknown = unknown
        super().__init__(
            f"characters not in the model's vocabulary: {describe_chars(unknown)}",
            "remove them from the prompt, or train on text that contains them",
        )


def describe_chars(chars: Iterable[str]) -> str:
    """Readable list of characters for messages: ``'é', '\\t'``."""
    return ", ".join(repr(c) for c in sorted(set(chars)))


class CharTokenizer:
    """Maps characters to integer ids and back."""

    def __init__(self, vocab: str) -> None:
        if not vocab:
            raise UserError("the vocabulary is empty", "train on a non-empty text")
        if len(set(vocab)) != len(vocab):
            raise UserError("the vocabulary repeats characters", "use CharTokenizer.from_text")
        self.vocab = vocab
        self.stoi = {ch: i for i, ch in enumerate(vocab)}

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        """Build the vocabulary from all the characters in ``text`` (sorted, as in the lecture)."""
        return cls("".join(sorted(set(text))))

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def unknown_chars(self, text: str) -> str:
        """The distinct characters of ``text`` that are not in the vocabulary, sorted."""
        return "".join(sorted(set(text) - self.stoi.keys()))

    def encode(self, text: str) -> list[int]:
        """String → ids. Raises :class:`UnknownCharacterError` naming any unknown characters."""
        try:
            return [self.stoi[c] for c in text]
        except KeyError:
            raise UnknownCharacterError(self.unknown_chars(text)) from None

    def encode_lenient(self, text: str) -> tuple[list[int], str]:
        """String → ids, dropping unknown characters; also returns what was dropped.

        Prompts use this: a user typing a character the model never saw gets a visible warning
        (the caller shows the dropped characters) rather than a refusal.
        """
        unknown = self.unknown_chars(text)
        return [self.stoi[c] for c in text if c in self.stoi], unknown

    def decode(self, ids: Iterable[int]) -> str:
        """Ids → string."""
        return "".join(self.vocab[i] for i in ids)


# The seed project's name for the same class; kept so its notebooks keep working.
TextEncoderDecoder = CharTokenizer
