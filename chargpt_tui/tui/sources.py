"""What the app shows, as one value: a run to train here, a checkpoint to open, a run to
follow, or the lecture to replay. The command line resolves and checks it before the screen
opens; the app only runs it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from chargpt_tui.checkpoint import SamplingModel
from chargpt_tui.ladder import Ladder
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


@dataclass(frozen=True)
class ReplayLecture:
    """Train the lecture's rungs here, one after another (``--lecture``): the ladder comes
    built, its text loaded and its rungs' folders checked."""

    ladder: Ladder


Source = TrainNew | OpenCheckpoint | FollowRun | ReplayLecture
