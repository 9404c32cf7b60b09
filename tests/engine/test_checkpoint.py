"""Checkpoints: what is saved loads back the same, run folders resolve to the right file, and a
checkpoint opened for sampling is the model it holds, ready to sample."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tiny_model import tiny_config

from chargpt_tui.checkpoint import (
    FORMAT_VERSION,
    load_checkpoint,
    load_for_sampling,
    resolve_checkpoint,
    save_checkpoint,
)
from chargpt_tui.errors import CheckpointError
from chargpt_tui.events import EvalDone, StateChanged, TrainingStarted
from chargpt_tui.model import GPTLanguageModel
from chargpt_tui.runs import BEST_NAME, CHECKPOINT_NAME

VOCAB = "\n abcdefghijk"  # 13 characters: tiny_config's vocabulary size


def write(path: Path, step: int, seed: int = 0) -> GPTLanguageModel:
    torch.manual_seed(seed)
    config = tiny_config()
    model = GPTLanguageModel(config).eval()
    save_checkpoint({"format_version": FORMAT_VERSION, "model_config": config.to_dict(),
                     "vocab": VOCAB, "model": model.state_dict(), "step": step}, path)
    return model


def test_a_saved_checkpoint_loads_back_the_same(tmp_path: Path) -> None:
    model = write(tmp_path / CHECKPOINT_NAME, step=7)
    payload = load_checkpoint(tmp_path / CHECKPOINT_NAME)
    assert payload["step"] == 7 and payload["vocab"] == VOCAB
    for name, tensor in model.state_dict().items():
        assert torch.equal(payload["model"][name], tensor), name
    assert [p.name for p in tmp_path.iterdir()] == [CHECKPOINT_NAME]  # no temp file left


def test_a_run_folder_resolves_to_ckpt_or_best_when_preferred(tmp_path: Path) -> None:
    write(tmp_path / CHECKPOINT_NAME, step=9)
    assert resolve_checkpoint(tmp_path, prefer_best=True) == tmp_path / CHECKPOINT_NAME
    write(tmp_path / BEST_NAME, step=5)
    assert resolve_checkpoint(tmp_path) == tmp_path / CHECKPOINT_NAME
    assert resolve_checkpoint(tmp_path, prefer_best=True) == tmp_path / BEST_NAME
    with pytest.raises(CheckpointError, match="no checkpoint"):
        resolve_checkpoint(tmp_path / "missing")


def test_load_for_sampling_gives_the_saved_model_in_eval_mode(tmp_path: Path) -> None:
    model = write(tmp_path / BEST_NAME, step=5, seed=1)
    write(tmp_path / CHECKPOINT_NAME, step=9, seed=2)
    loaded = load_for_sampling(tmp_path, "cpu", prefer_best=True)
    assert loaded.file == tmp_path / BEST_NAME and loaded.step == 5
    assert loaded.device == torch.device("cpu") and not loaded.model.training
    assert loaded.tokenizer.vocab == VOCAB
    ids = torch.tensor([loaded.tokenizer.encode("abc\nk")])
    with torch.no_grad():
        expected, _ = model(ids)
        got, _ = loaded.model(ids)
    torch.testing.assert_close(got, expected)
    assert load_for_sampling(tmp_path, "cpu").step == 9


def test_an_opened_checkpoint_tells_its_history_as_events(tmp_path: Path) -> None:
    config = tiny_config()
    save_checkpoint({"format_version": FORMAT_VERSION, "model_config": config.to_dict(),
                     "vocab": VOCAB, "model": GPTLanguageModel(config).state_dict(), "step": 40,
                     "train_config": {"max_iters": 100}, "data": "play.txt",
                     "last_eval": {"train": 1.5, "val": 1.75}, "best_val_loss": 1.625},
                    tmp_path / CHECKPOINT_NAME)
    started, evaluated, state = load_for_sampling(tmp_path, "cpu").history_events()
    assert isinstance(started, TrainingStarted)
    assert (started.step, started.max_iters, started.data) == (40, 100, "play.txt")
    assert started.out_dir == str(tmp_path / CHECKPOINT_NAME) and started.device == "cpu"
    assert evaluated == EvalDone(40, 1.5, 1.75, 1.625)
    assert state == StateChanged("chat only")
