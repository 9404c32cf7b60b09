"""Where the prompt pane gets weights: the live trainer, a checkpoint opened for chat only, or
the newest checkpoint of a run followed from outside (``--follow``).

Owned by the app's session (which attaches the trainer or the loaded weights) and read by the
prompt pane and the views (which sample), so no widget reaches into another. All methods are
safe to call from worker threads.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from chargpt_tui.checkpoint import load_for_sampling
from chargpt_tui.control import HOLD_WAIT_SECONDS
from chargpt_tui.errors import describe
from chargpt_tui.model import GPTLanguageModel
from chargpt_tui.tokenizer import CharTokenizer
from chargpt_tui.train import Trainer


@dataclass(frozen=True)
class Snapshot:
    """Eval-mode weights of a finished step, frozen; training keeps updating its own copy."""

    model: GPTLanguageModel
    tokenizer: CharTokenizer
    step: int


@dataclass(frozen=True)
class Refresh:
    """What a look at a followed run's checkpoint found."""

    loaded: int | None = None  # the step just loaded; None when nothing new was loaded
    problem: str | None = None  # why the newest file could not be loaded (older weights stay)
    new: bool = False  # the file changed since the last look (False: nothing was done)


# What tells one checkpoint file from the next. A run replaces its checkpoint atomically
# (``os.replace``), so a new file means a new inode and a new ctime; size and mtime are there
# too should a writer ever rewrite the file in place.
FileSignature = tuple[int, int, int, int, int]


def file_signature(path: Path) -> FileSignature | None:
    """The file's identity, or None when there is no file (or it cannot be looked at)."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)


class CheckpointFollower:
    """Keeps a :class:`ModelSource` on the newest checkpoint file at ``path``.

    The one loader of a followed run: the follow session calls :meth:`refresh` when the run
    announces a save, the prompt pane when a prompt is submitted, so a prompt never answers
    from older weights than the file on disk, and the views never show an older step than a
    prompt used. A look costs one ``stat`` when the file is the one last tried; loads are
    serialized, so two callers never load the same file twice. Worker threads only: a load
    takes a while.
    """

    def __init__(self, source: ModelSource, path: Path, device: str = "auto") -> None:
        self.source = source
        self.path = path
        self.device = device
        self._lock = threading.Lock()
        self._looked = False  # _seen and _problem describe a file tried before
        self._seen: FileSignature | None = None  # the file last tried (loaded or not)
        self._problem: str | None = None  # why that file could not be loaded
        self._loaded_any = False

    def refresh(self) -> Refresh:
        """Load the file if it is not the one last tried; say what happened."""
        with self._lock:
            # Looked at before the load: a file replaced during the load is then seen as new
            # next time (one load too many), never taken for the one already loaded.
            signature = file_signature(self.path)
            if self._looked and signature == self._seen:
                return Refresh(problem=self._problem)
            self._looked, self._seen = True, signature
            if signature is None:
                self._problem = (f"{self.path} is gone" if self._loaded_any else
                                 f"no checkpoint in {self.path.parent} yet: prompts work once "
                                 "the run saves one")
                return Refresh(problem=self._problem, new=True)
            try:
                loaded = load_for_sampling(self.path, self.device)
            except Exception as error:  # noqa: BLE001 - torn, removed, foreign: all one line
                self._problem = describe(error)
                return Refresh(problem=self._problem, new=True)
            self._problem, self._loaded_any = None, True
            self.source.attach_model(loaded.model, loaded.tokenizer, loaded.step)
            return Refresh(loaded=loaded.step, new=True)


class ModelSource:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._trainer: Trainer | None = None
        self._snapshot: Snapshot | None = None
        self._follower: CheckpointFollower | None = None

    def follow_checkpoint(self, path: Path, device: str = "auto") -> None:
        """Answer from the newest file at ``path`` (a followed run's checkpoint), loaded by
        :meth:`refresh`."""
        self._follower = CheckpointFollower(self, path, device)

    def refresh(self) -> Refresh:
        """Following a run: load its checkpoint if the file is newer than the weights here.
        Otherwise nothing to do. Call from a worker thread, before :meth:`snapshot`."""
        follower = self._follower
        return follower.refresh() if follower is not None else Refresh()

    def attach_trainer(self, trainer: Trainer) -> None:
        with self._lock:
            self._trainer, self._snapshot = trainer, None

    def attach_model(self, model: GPTLanguageModel, tokenizer: CharTokenizer, step: int) -> None:
        with self._lock:
            self._trainer, self._snapshot = None, Snapshot(model, tokenizer, step)

    @property
    def ready(self) -> bool:
        return self._trainer is not None or self._snapshot is not None

    @property
    def vocab(self) -> str:
        """The characters of the weights in hand ('' before any), without copying them."""
        with self._lock:
            trainer, snapshot = self._trainer, self._snapshot
        if trainer is not None:
            return trainer.setup.tokenizer.vocab
        return snapshot.tokenizer.vocab if snapshot is not None else ""

    def snapshot(self) -> Snapshot | None:
        """The newest weights; copied only when training has moved on since the last copy."""
        with self._lock:
            trainer, cached = self._trainer, self._snapshot
        if trainer is None or (cached is not None and cached.step == trainer.step):
            return cached
        model, step = trainer.snapshot()
        fresh = Snapshot(model, trainer.setup.tokenizer, step)
        with self._lock:
            if self._trainer is trainer:
                self._snapshot = fresh
        return fresh

    @contextlib.contextmanager
    def hold_training(self) -> Iterator[None]:
        """Park training while a prompt is answered, so the two don't split the CPU cores
        (measured: splitting them slows both far more than taking turns). Training resumes
        by itself when the block ends."""
        trainer = self._trainer
        if trainer is None:
            yield
            return
        with trainer.control.hold(wait=HOLD_WAIT_SECONDS):
            yield
