"""Shared fixtures: small generated corpora and tiny trained runs (no network, no real data)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

SPEAKERS = ["ROMEO", "JULIET", "NURSE", "MERCUTIO", "FRIAR"]
WORDS = [
    "thou", "art", "the", "fair", "sun", "and", "i", "am", "but", "a", "moon", "that", "doth",
    "wane", "upon", "thy", "cheek", "what", "light", "through", "yonder", "window", "breaks",
    "my", "love", "is", "deep", "as", "the", "sea",
]


def make_corpus(n_chars: int = 20_000, seed: int = 0) -> str:
    """Deterministic play-shaped text: speaker lines followed by verse."""
    rng = random.Random(seed)
    parts: list[str] = []
    size = 0
    while size < n_chars:
        lines = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 9))).capitalize() + ","
                 for _ in range(rng.randint(1, 3))]
        part = f"{rng.choice(SPEAKERS)}:\n" + "\n".join(lines) + "\n\n"
        parts.append(part)
        size += len(part)
    return "".join(parts)[:n_chars]


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
                   ) -> Path:
    """Every test gets its own download cache, so nothing leaks between tests or from $HOME."""
    cache = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("CHARGPT_TUI_CACHE", str(cache))
    return cache


@pytest.fixture
def corpus_file(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text(make_corpus(), encoding="utf-8")
    return path


TINY = dict(n_layer=2, n_head=2, n_embd=16, block_size=16, batch_size=4, eval_iters=2,
            eval_interval=10, warmup_iters=2, learning_rate=3e-3)
