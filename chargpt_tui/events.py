"""What training tells the world: small immutable events on a publish/subscribe bus.

The engine publishes; the headless CLI (rich progress) and the TUI (Textual messages) subscribe.
Subscribers run on the training thread, so they must be quick and must not touch UI objects
directly — the TUI turns each event into a thread-safe message.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class TrainingStarted:
    step: int  # > 0 when resuming
    max_iters: int | None  # None: a time budget ends the run (the steps it allows are not known)
    device: str
    parameters: int
    data: str
    out_dir: str
    config: dict  # model and training settings, plain data


@dataclass(frozen=True)
class StepDone:
    step: int
    max_iters: int | None  # None: a time budget decides, and its pace is not known yet
    loss: float
    lr: float
    tokens_per_second: float  # smoothed over recent steps
    elapsed: float  # seconds spent training (pauses excluded)
    eta: float  # seconds left at the recent pace
    # Under a time budget: the budget clock, wall-clock seconds since the command started
    # (pauses excluded), out of budget_seconds. None without a budget.
    budget_used: float | None = None
    budget_seconds: float | None = None


@dataclass(frozen=True)
class EvalDone:
    step: int
    train_loss: float
    val_loss: float
    best_val_loss: float
    best_step: int | None = None  # the step of best_val_loss (None in runs logged before it)


@dataclass(frozen=True)
class EvalProgress:
    """An evaluation under way (the state is "evaluating"): ``done`` of ``total`` batches."""

    step: int
    done: int
    total: int


@dataclass(frozen=True)
class CheckpointSaved:
    step: int
    path: str
    reason: str  # "eval", "requested", "stop", "final"


@dataclass(frozen=True)
class SampleChunk:
    """A piece of a live sample from the current weights; ``final`` marks its end."""

    step: int
    text: str
    final: bool = False


@dataclass(frozen=True)
class StateChanged:
    state: str  # "training", "evaluating", "paused", "finished", "stopped", "failed"
    reason: str = ""


@dataclass(frozen=True)
class Notice:
    """A warning or information line for the user (data fallback, compile fallback, ...)."""

    message: str
    level: str = "warning"  # "info", "warning" or "error"


Event = (TrainingStarted | StepDone | EvalProgress | EvalDone | CheckpointSaved | SampleChunk
         | StateChanged | Notice)
Subscriber = Callable[[Event], None]


class EventBus:
    """Fan-out of events to subscribers, safe to subscribe/unsubscribe from any thread."""

    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []
        self._lock = threading.Lock()

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Add a subscriber; returns a function that removes it again."""
        with self._lock:
            self._subscribers = [*self._subscribers, subscriber]

        def unsubscribe() -> None:
            with self._lock:
                self._subscribers = [s for s in self._subscribers if s is not subscriber]

        return unsubscribe

    def publish(self, event: Event) -> None:
        for subscriber in self._subscribers:  # a snapshot: the list is replaced, never mutated
            subscriber(event)
