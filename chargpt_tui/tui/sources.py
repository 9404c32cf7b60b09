"""What the app shows, as one value: a run to train here, a checkpoint to open, or a run to
follow. The command line resolves and checks it before the screen opens; the app only runs it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from chargpt_tui.checkpoint import SamplingModel
from chargpt_tui.run_setup import RunSetup

# Called on the training worker with (download progress, notice) callbacks.
SetupFactory = Callable[[Callable[[int, int | None], None], Callable[[str], None]], RunSetup]


@dataclass(frozen=True)
class TrainNew:
    """Train a run here (also a resumed one): the factory loads the data and builds the setup."""

    setup_factory: SetupFactory


@dataclass(frozen=True)
class OpenCheckpoint:
    """Chat with a trained checkpoint, no training."""

    path: Path
    opened: SamplingModel | None = None  # already loaded (the CLI checks the file up front)


@dataclass(frozen=True)
class FollowRun:
    """Watch a run trained elsewhere through its metrics.jsonl; prompt its newest checkpoint."""

    run_dir: Path


Source = TrainNew | OpenCheckpoint | FollowRun
