"""Helpers shared by tests that train real (tiny) runs in subprocesses.

Tests generate their own text: a deterministic pseudo-Shakespeare, never the real corpus.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from corpus import write_corpus
from tiny_model import tiny_cli_args

# The smallest shapes that still exercise every code path; seconds per run on 2 CPU cores.
TINY_MODEL = [*tiny_cli_args(n_layer=1), "--batch-size", "4", "--eval-iters", "2"]


def write_text(folder: Path, name: str = "play.txt") -> Path:
    return write_corpus(folder, name, lines=300)


def torchrun_command(nproc: int, *train_args: str) -> list[str]:
    """``torchrun --nproc_per_node=N -m chargpt_tui train ...`` on this machine alone.

    ``--standalone`` lets the rendezvous store pick its own free port: choosing one here (bind
    to port 0, close, pass the number on) leaves a window in which another process can take it.
    """
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc_per_node={nproc}", "-m", "chargpt_tui", "train", *train_args]


def subprocess_env(cache: Path) -> dict[str, str]:
    return {**os.environ, "CHARGPT_TUI_CACHE": str(cache), "OMP_NUM_THREADS": "1",
            "PYTHONWARNINGS": "ignore"}
