"""A run's weights history: a few snapshots across training, to watch what the model learned.

``ckpt.pt`` holds only the latest state and ``best.pt`` the best one; to step between moments of
a run (embeddings drifting into groups, heads finding their jobs) the trainer also keeps the
weights of some evaluations in ``history/step-000500.pt`` — weights only, written atomically.

Bounded two ways: at most ``keep`` files (thinned so they stay spread over the whole run:
the first and the newest always stay), and at most :data:`HISTORY_BYTES` in all (a big model
keeps fewer files, and one too big for two of them keeps none: a GPU run never writes GBs).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch

from chargpt_tui.checkpoint import load_for_sampling, save_checkpoint
from chargpt_tui.errors import CheckpointError
from chargpt_tui.model import GPTLanguageModel
from chargpt_tui.tokenizer import CharTokenizer

HISTORY_DIR = "history"
HISTORY_BYTES = 256 * 2**20  # the whole history's budget on disk
NAME = re.compile(r"step-(\d+)\.pt")


def history_path(run_dir: Path, step: int) -> Path:
    return run_dir / HISTORY_DIR / f"step-{step:06d}.pt"


def saved_steps(run_dir: str | os.PathLike[str]) -> list[int]:
    """The steps a run's history holds, oldest first (none if it has no history)."""
    folder = Path(run_dir) / HISTORY_DIR
    if not folder.is_dir():
        return []
    return sorted(int(match.group(1)) for path in folder.iterdir()
                  if (match := NAME.fullmatch(path.name)))


def files_to_keep(model_bytes: int, keep: int) -> int:
    """How many snapshots fit: ``keep``, fewer for a big model, 0 when not even two fit
    (a history of one step shows no change)."""
    fits = HISTORY_BYTES // max(1, model_bytes)
    allowed = min(keep, fits)
    return allowed if allowed >= 2 else 0


def thin(steps: list[int], keep: int) -> list[int]:
    """The steps to delete so at most ``keep`` remain, evenly spread.

    Repeatedly drops the inner step whose neighbours are closest together (the one whose loss
    leaves the smallest gap), so the first and the newest step always stay and the rest end up
    about evenly spaced however long the run.
    """
    remaining, dropped = sorted(steps), []
    while len(remaining) > max(keep, 0):
        if len(remaining) <= 2:  # keep 0 or 1: the newest goes last
            dropped.append(remaining.pop(0))
            continue
        gaps = [remaining[i + 1] - remaining[i - 1] for i in range(1, len(remaining) - 1)]
        dropped.append(remaining.pop(1 + gaps.index(min(gaps))))
    return sorted(dropped)


def record(run_dir: Path, payload: dict[str, Any], keep: int) -> str | None:
    """Save ``payload`` (a weights-only checkpoint) as its step's history file, then thin.

    Returns a one-line problem for the run's log if the disk refused (history is a nicety:
    it must never stop training), else None.
    """
    model_bytes = sum(t.numel() * t.element_size() for t in payload["model"].values())
    allowed = files_to_keep(model_bytes, keep)
    if allowed == 0:
        return None
    try:
        save_checkpoint(payload, history_path(run_dir, payload["step"]))
        for step in thin(saved_steps(run_dir), allowed):
            history_path(run_dir, step).unlink(missing_ok=True)
    except (CheckpointError, OSError) as error:
        return f"weights history not updated: {error}"
    return None


def load_step(run_dir: str | os.PathLike[str], step: int, device: torch.device | str = "cpu"
              ) -> tuple[GPTLanguageModel, CharTokenizer]:
    """The model as it was at ``step`` (from the run's history), ready to sample or explain."""
    opened = load_for_sampling(history_path(Path(run_dir), step), str(device))
    return opened.model, opened.tokenizer
