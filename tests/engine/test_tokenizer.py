"""The character tokenizer: the lecture's sorted vocabulary, exact round trips, and unknown
characters named rather than crashing."""

from __future__ import annotations

import pytest

from chargpt_tui.errors import UserError
from chargpt_tui.tokenizer import (
    CharTokenizer,
    TextEncoderDecoder,
    UnknownCharacterError,
    describe_chars,
)


def test_tokenizer_round_trip_and_unknown_characters() -> None:
    tokenizer = CharTokenizer.from_text("hello world\n")
    assert tokenizer.vocab == "\n dehlorw"
    assert tokenizer.decode(tokenizer.encode("hold her")) == "hold her"
    with pytest.raises(UnknownCharacterError, match="'X', 'é'"):
        tokenizer.encode("héllo X")
    assert tokenizer.encode_lenient("héllo X") == (tokenizer.encode("hllo "), "Xé")
    assert TextEncoderDecoder is CharTokenizer


@pytest.mark.parametrize("vocab", ["", "abca"])
def test_a_vocabulary_must_be_non_empty_and_without_repeats(vocab: str) -> None:
    with pytest.raises(UserError):
        CharTokenizer(vocab)


def test_unknown_characters_are_listed_once_sorted_and_readable() -> None:
    tokenizer = CharTokenizer("ab")
    assert tokenizer.unknown_chars("zabz\t") == "\tz"
    assert describe_chars("z\tz") == "'\\t', 'z'"
    assert tokenizer.vocab_size == 2 and tokenizer.encode_lenient("") == ([], "")
