"""Helpers shared by tests that train real (tiny) runs in subprocesses.

Tests generate their own text: a deterministic pseudo-Shakespeare, never the real corpus.
"""

from __future__ import annotations

import os
import random
import socket
import sys
from pathlib import Path

WORDS = ("thou", "art", "the", "king", "my", "lord", "love", "night", "day", "sweet", "fair",
         "death", "heaven", "earth", "shall", "not", "be", "heart", "gentle", "speak", "hath",
         "doth", "what", "where", "good", "noble", "wherefore")
SPEAKERS = ("ROMEO", "JULIET", "KING HENRY", "NURSE", "FIRST CITIZEN")

# The smallest shapes that still exercise every code path; seconds per run on 2 CPU cores.
TINY_MODEL = ["--preset", "tiny", "--n-layer", "1", "--n-head", "2", "--n-embd", "16",
              "--block-size", "16", "--batch-size", "4", "--eval-iters", "2"]


def pseudo_shakespeare(lines: int = 300, seed: int = 0) -> str:
    rng = random.Random(seed)
    speeches = []
    for _ in range(lines):
        words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 10)))
        speeches.append(f"{rng.choice(SPEAKERS)}:\n{words.capitalize()}{rng.choice('.,!?')}\n")
    return "\n".join(speeches)


def write_text(folder: Path, name: str = "play.txt") -> Path:
    path = folder / name
    path.write_text(pseudo_shakespeare(), encoding="utf-8")
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def torchrun_command(nproc: int, *train_args: str) -> list[str]:
    """``torchrun --nproc_per_node=N -m chargpt_tui train ...`` with a free rendezvous port."""
    return [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
            "--master_addr=127.0.0.1", f"--master_port={free_port()}", "-m", "chargpt_tui",
            "train", *train_args]


def subprocess_env(cache: Path) -> dict[str, str]:
    return {**os.environ, "CHARGPT_TUI_CACHE": str(cache), "OMP_NUM_THREADS": "1",
            "PYTHONWARNINGS": "ignore"}
