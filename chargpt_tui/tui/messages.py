"""Messages between the workers, the widgets and the app.

Workers never touch widgets: they post these (``post_message`` is thread-safe and never blocks).
Progress messages replace their queued predecessor (``can_replace``), so a fast training loop
costs the UI one repaint per frame, not one per step. Generated text never travels in messages:
it is buffered in queues and drained on a UI timer (see the widgets).
"""

from __future__ import annotations

from textual.message import Message

from chargpt_tui.events import Event, StepDone
from chargpt_tui.explain import Curves
from chargpt_tui.ladder import RungResult
from chargpt_tui.sampling import BeamResult
from chargpt_tui.train import TrainResult


class TrainingProgress(Message):
    """The latest finished step; a newer one supersedes any still waiting in the queue."""

    def __init__(self, step: StepDone) -> None:
        super().__init__()
        self.step = step

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, TrainingProgress)


class DownloadProgress(Message):
    """Bytes of the training text downloaded so far (total None when the server won't say)."""

    def __init__(self, done: int, total: int | None) -> None:
        super().__init__()
        self.done, self.total = done, total

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, DownloadProgress)


class EngineEvent(Message):
    """Any other engine event (start, eval, checkpoint, state change, notice), in order."""

    def __init__(self, event: Event) -> None:
        super().__init__()
        self.event = event


class RunStatus(Message):
    """The state the stats line shows, in the session's words (e.g. "paused", "stopping", or
    "following" with the followed run's own state as the detail); ``detail`` None keeps it."""

    def __init__(self, state: str, detail: str | None = None) -> None:
        super().__init__()
        self.state, self.detail = state, detail


class LogLine(Message):
    """A line for the log panel from outside the engine (data loading, errors)."""

    def __init__(self, text: str, level: str = "info") -> None:
        super().__init__()
        self.text, self.level = text, level


class ModelReady(Message):
    """Weights exist to prompt (a trainer was built or a checkpoint loaded)."""

    def __init__(self, step: int, training: bool) -> None:
        super().__init__()
        self.step, self.training = step, training


class ModelUnavailable(Message):
    """No weights to prompt, and why (e.g. a followed run has not saved a checkpoint yet)."""

    def __init__(self, reason: str) -> None:
        super().__init__()
        self.reason = reason


class HistoryLoaded(Message):
    """Loss history of an opened run (from its metrics.jsonl), for the chart."""

    def __init__(self, train: list[tuple[int, float]], val: list[tuple[int, float]]) -> None:
        super().__init__()
        self.train, self.val = train, val


class TrainingEnded(Message):
    """The training worker returned: a result, or the one-line error that stopped it.

    ``unsaved`` marks an error after training had begun (e.g. the disk refused a checkpoint):
    progress since the last save would be lost by quitting.
    """

    def __init__(self, result: TrainResult | None, error: str | None = None,
                 unsaved: bool = False) -> None:
        super().__init__()
        self.result, self.error, self.unsaved = result, error, unsaved


class GenerationStarted(Message):
    """A prompt is being answered from the snapshot of ``step``; ``warnings`` about the prompt."""

    def __init__(self, generation_id: int, step: int, warnings: list[str]) -> None:
        super().__init__()
        self.generation_id, self.step, self.warnings = generation_id, step, warnings


class AnswerStreaming(Message):
    """The first characters of an answer are in its queue (sent once per answer)."""

    def __init__(self, generation_id: int) -> None:
        super().__init__()
        self.generation_id = generation_id


class SampleStreaming(Message):
    """The first characters of a live sample are in the panel's queue (sent once per sample):
    its drain timer runs only while a sample streams."""


class GenerationEnded(Message):
    """A generation finished or was stopped; chars/s and (beam mode) the final beams."""

    def __init__(self, generation_id: int, chars: int, seconds: float, stopped: bool,
                 beams: BeamResult | None = None, error: str | None = None) -> None:
        super().__init__()
        self.generation_id, self.chars, self.seconds = generation_id, chars, seconds
        self.stopped, self.beams, self.error = stopped, beams, error


class ViewText(Message):
    """A text the views (F4, F7, F8) can look at, by name: "last prompt" (with its answer),
    "live sample" or "validation". The app keeps the newest of each name."""

    def __init__(self, name: str, text: str) -> None:
        super().__init__()
        self.name, self.text = name, text


class CompareLoaded(Message):
    """Another run's curves, read for the chart to lay over this run's (or why they could not
    be read)."""

    def __init__(self, label: str, curves: Curves | None, error: str | None = None) -> None:
        super().__init__()
        self.label, self.curves, self.error = label, curves, error


class NextCharsComputed(Message):
    """The most likely next characters after the text typed so far, with probabilities."""

    def __init__(self, text: str, candidates: list[tuple[str, float]], step: int,
                 error: str | None = None) -> None:
        super().__init__()
        self.text, self.candidates, self.step, self.error = text, candidates, step, error

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, NextCharsComputed)


class RungStarted(Message):
    """A rung of the lecture (``--lecture``) starts training: the ``index``-th of ``total``;
    ``cost``: what it will take here, when measured first (the scaled rung on a CPU)."""

    def __init__(self, rung: str, index: int, total: int, cost: str = "") -> None:
        super().__init__()
        self.rung, self.index, self.total, self.cost = rung, index, total, cost


class RungFinished(Message):
    """A rung of the lecture ended: its row of the table and its validation curve."""

    def __init__(self, result: RungResult, val: tuple[tuple[int, float], ...]) -> None:
        super().__init__()
        self.result, self.val = result, val
