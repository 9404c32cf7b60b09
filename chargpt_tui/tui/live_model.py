"""Where the prompt pane gets weights: the live trainer, or a checkpoint opened for chat only.

Shared by the training panel (which attaches the trainer) and the prompt pane (which samples),
so neither widget reaches into the other. All methods are safe to call from worker threads.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass

from chargpt_tui.control import HOLD_WAIT_SECONDS
from chargpt_tui.model import GPTLanguageModel
from chargpt_tui.tokenizer import CharTokenizer
from chargpt_tui.train import Trainer


@dataclass(frozen=True)
class Snapshot:
    """Eval-mode weights frozen at a step boundary; training keeps updating its own copy."""

    model: GPTLanguageModel
    tokenizer: CharTokenizer
    step: int


class ModelSource:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._trainer: Trainer | None = None
        self._snapshot: Snapshot | None = None

    def attach_trainer(self, trainer: Trainer) -> None:
        with self._lock:
            self._trainer, self._snapshot = trainer, None

    def attach_model(self, model: GPTLanguageModel, tokenizer: CharTokenizer, step: int) -> None:
        with self._lock:
            self._trainer, self._snapshot = None, Snapshot(model, tokenizer, step)

    @property
    def ready(self) -> bool:
        return self._trainer is not None or self._snapshot is not None

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
