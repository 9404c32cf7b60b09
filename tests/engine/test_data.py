"""Data: splitting, batches, and the offline corpus."""

from __future__ import annotations

import pytest
import torch

from chargpt_tui.data import get_batch, load_dataset, python_stdlib_corpus, split_data
from chargpt_tui.errors import DataError
from chargpt_tui.tokenizer import CharTokenizer


def test_split_is_ninety_ten_and_batches_are_shifted_windows() -> None:
    text = "".join(chr(97 + i % 26) for i in range(1000))
    tokenizer = CharTokenizer.from_text(text)
    data = split_data(text, tokenizer, block_size=8)
    assert len(data.train) == 900 and len(data.val) == 100
    generator = torch.Generator().manual_seed(0)
    x, y = get_batch(data.train, 8, 5, generator)
    assert x.shape == y.shape == (5, 8)
    assert torch.equal(x[:, 1:], y[:, :-1])  # y is x moved on by one character
    for row_x, row_y in zip(x, y):  # and the windows come from the text, in order
        assert (int(row_y[-1]) - int(row_x[-1])) % 26 == 1


def test_split_refuses_text_too_short_for_the_block() -> None:
    tokenizer = CharTokenizer("ab")
    with pytest.raises(DataError, match="too short for block size 64: 100 characters"):
        split_data("ab" * 50, tokenizer, block_size=64)


def test_offline_corpus_is_deterministic_and_sized() -> None:
    first, second = python_stdlib_corpus(), python_stdlib_corpus()
    assert first == second
    assert 1_000_000 <= len(first) <= 2_000_000
    assert first.isascii() and "def " in first
    assert load_dataset("python-stdlib").text == first


def test_explicit_bad_sources_are_errors_not_fallbacks(tmp_path) -> None:
    with pytest.raises(DataError, match="not found"):
        load_dataset(str(tmp_path / "missing.txt"))
    with pytest.raises(DataError, match="unsupported URL scheme"):
        load_dataset("ftp://example.invalid/x.txt")
