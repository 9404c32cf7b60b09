"""The one tiny model shape the tests share. Tests that need another shape say only what differs
(e.g. ``tiny_config(vocab_size=4, n_layer=1)``), so the shape is written once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from chargpt_tui.checkpoint import load_for_sampling
from chargpt_tui.model import GPTConfig, GPTLanguageModel
from chargpt_tui.tokenizer import CharTokenizer

# Two blocks of two heads over a 16-character context: every code path, milliseconds per step.
TINY_SHAPE: dict[str, Any] = dict(n_layer=2, n_head=2, n_embd=16, block_size=16)


def tiny_config(**changes: Any) -> GPTConfig:
    return GPTConfig(**{"vocab_size": 13, **TINY_SHAPE, **changes})


def tiny_cli_args(**changes: Any) -> list[str]:
    """The same shape as ``chargpt-tui train`` options (the tiny preset, then the shape)."""
    shape = {**TINY_SHAPE, **changes}
    return ["--preset", "tiny", *[arg for name, value in shape.items()
                                  for arg in (f"--{name.replace('_', '-')}", str(value))]]


def open_model(run: Path, prefer_best: bool = False) -> tuple[GPTLanguageModel, CharTokenizer]:
    """A run's model on the CPU, opened the way the app and the CLI open it."""
    opened = load_for_sampling(run, "cpu", prefer_best)
    return opened.model, opened.tokenizer
