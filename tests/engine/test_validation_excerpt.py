"""A checkpoint opened for chat only finds the validation text its views look at, from the
run's data if this machine has it (training hands the views the same text)."""

from __future__ import annotations

from pathlib import Path

import pytest
from tiny_model import tiny_config

from chargpt_tui.checkpoint import FORMAT_VERSION, load_for_sampling, save_checkpoint
from chargpt_tui.data import split_data
from chargpt_tui.model import GPTLanguageModel
from chargpt_tui.runs import CHECKPOINT_NAME
from chargpt_tui.tokenizer import CharTokenizer

VOCAB = "\n abcdefghijk"  # 13 characters: tiny_config's vocabulary size


def test_an_opened_checkpoint_finds_its_validation_text_if_it_is_here(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = tiny_config()
    text = "".join(VOCAB[(i * 7 + i // 13) % len(VOCAB)] for i in range(2000))
    (tmp_path / "play.txt").write_text(text)
    save_checkpoint({"format_version": FORMAT_VERSION, "model_config": config.to_dict(),
                     "vocab": VOCAB, "model": GPTLanguageModel(config).state_dict(), "step": 40,
                     "data": "play.txt"}, tmp_path / CHECKPOINT_NAME)
    loaded = load_for_sampling(tmp_path, "cpu")
    tokenizer = CharTokenizer(VOCAB)
    val = split_data(text, tokenizer, config.block_size).val
    assert loaded.validation_excerpt() == tokenizer.decode(val[:2 * config.block_size].tolist())
    (tmp_path / "play.txt").unlink()  # the data is elsewhere now: nothing to show, no error
    assert loaded.validation_excerpt() is None
