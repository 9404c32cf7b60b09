"""The one source of training text for the tests: deterministic, play-shaped, generated.

Tests never use the real corpus. The text is fixed for a given (lines, seed), so runs trained on
it are reproducible (the TUI snapshots depend on that).
"""

from __future__ import annotations

import random
from pathlib import Path

NAMES = ("ROMEO", "JULIET", "KING", "QUEEN", "NURSE")
WORDS = ("the", "king", "queen", "lord", "my", "thy", "thou", "art", "love", "death", "night",
         "day", "sweet", "heart", "good", "shall", "will", "come", "go", "speak", "hear")


def pseudo_shakespeare(lines: int = 400, seed: int = 0) -> str:
    """Speaker lines and short sentences, ``lines`` speeches long (about 45 characters each)."""
    rng = random.Random(seed)
    out = []
    for _ in range(lines):
        out.append(rng.choice(NAMES) + ":")
        words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 9)))
        out.append(words.capitalize() + rng.choice(".,!?"))
        out.append("")
    return "\n".join(out)


def write_corpus(folder: Path, name: str = "play.txt", lines: int = 400, seed: int = 0) -> Path:
    path = folder / name
    path.write_text(pseudo_shakespeare(lines, seed), encoding="utf-8")
    return path
