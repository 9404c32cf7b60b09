"""The app's session: what it shows and steers, behind one interface.

Four kinds: a run trained here (:class:`TrainSession`), the lecture's rungs trained here one
after another (:class:`LectureSession`), a checkpoint opened for chat only
(:class:`CheckpointSession`), and a run trained elsewhere, followed through its metrics.jsonl
(:class:`FollowSession`). The app asks its session everything that depends on the kind: which
steering keys apply, pause, save and stop, the weights that prompts and views sample
(``live_model``), the run's folder, and what to print at exit. Nothing else branches on it.

A session owns the workers that do the slow parts: training, loading a checkpoint, following a
run. They are thread workers run on the training panel's node, so they end with it, and they
never touch a widget: engine events go through the panel's thread-safe ``show_event``,
everything else is a message posted to the panel, which only draws.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import ClassVar, Protocol

from textual.message import Message
from textual.worker import get_current_worker

from chargpt_tui.checkpoint import SamplingModel, load_for_sampling
from chargpt_tui.errors import describe
from chargpt_tui.events import (
    CheckpointSaved,
    EvalDone,
    Event,
    EventBus,
    StateChanged,
    TrainingStarted,
)
from chargpt_tui.ladder import CostEstimate, RungResult, cost_note, format_seconds, stop_summary
from chargpt_tui.lecture import Rung
from chargpt_tui.run_setup import (
    RunSetup,
    continue_command,
    sample_at_evaluations,
    sample_command,
)
from chargpt_tui.runs import BEST_NAME, CHECKPOINT_NAME, METRICS_NAME, follow_metrics, loss_history
from chargpt_tui.train import Trainer, TrainResult
from chargpt_tui.tui import messages
from chargpt_tui.tui.formatting import count
from chargpt_tui.tui.live_model import ModelSource
from chargpt_tui.tui.sources import FollowRun, OpenCheckpoint, ReplayLecture, Source, TrainNew
from chargpt_tui.tui.widgets.live_sample import LiveSample
from chargpt_tui.tui.widgets.training_panel import TrainingPanel

# The key actions that steer training; a session says which of them apply (``actions``).
STEERING = frozenset({"pause", "resume", "toggle_pause", "save"})
# A followed run's checkpoint is reloaded this long after a CheckpointSaved, once for all the
# saves announced meanwhile: replaying a long history announces many at once, a tiny model
# saves several a second, and only the newest file exists anyway.
RELOAD_DELAY = 0.3


class SessionView(Protocol):
    """What a session's worker threads show their work on: the training panel. Every call is
    safe from any thread and returns at once."""

    def post_message(self, message: Message) -> bool: ...

    def show_event(self, event: Event) -> None: ...

    def call_later(self, callback: Callable[[], object]) -> bool: ...


class Session(ABC):
    """One thing the app shows. The defaults answer for a session that trains nothing: no
    steering key applies, and pause, save and stop say so by returning None or False."""

    actions: ClassVar[frozenset[str]] = frozenset()  # the STEERING actions that apply
    sample_placeholder: ClassVar[str] = LiveSample.PLACEHOLDER  # until a live sample arrives
    live_samples: ClassVar[bool] = True  # whether live samples come (the views wait for one)

    def __init__(self, device: str = "auto") -> None:
        self.device = device
        self.live_model = ModelSource()  # the weights prompts and views sample
        self.panel: TrainingPanel | None = None  # hosts the workers, once started

    @property
    def run_dir(self) -> Path | None:
        """The run's folder, when known (a trained run's once it has started)."""
        return None

    @property
    def lecture_rungs(self) -> Sequence[Rung]:
        """The lecture's rungs this session trains, in order (a ladder panel lists them)."""
        return ()

    def start(self, panel: TrainingPanel) -> None:
        """Start the workers on ``panel``: they end with it, and what they find is shown there.
        Call on the UI thread, once the panel is mounted."""
        self.panel = panel

    def close(self) -> None:
        """The app is closing: let the workers end now."""
        return None  # by default they end with the panel, which cancels them

    @property
    def running(self) -> bool:
        """Training is under way in this process."""
        return False

    @property
    def paused(self) -> bool:
        return False

    @property
    def can_control(self) -> bool:
        """Pause, resume and save would be obeyed now."""
        return False

    def allows(self, action: str) -> bool | None:
        """For the footer and ``check_action``: True shows a STEERING key, None dims it (it
        applies, but not now), False hides it (it never applies here)."""
        if action not in self.actions:
            return False
        if not self.can_control:  # pause, not resume, stands dimmed for the pair in the footer
            return False if action == "resume" else None
        if action == "pause":
            return not self.paused
        if action == "resume":
            return self.paused
        return True

    def toggle_pause(self) -> bool | None:
        """Pause or resume; returns True when now paused, None when nothing trains here."""
        return None

    def request_save(self) -> bool:
        """Ask for a checkpoint now; False when nothing trains here (nothing to save)."""
        return False

    def stop(self, reason: str, exit_code: int = 0) -> bool:
        """Ask training to stop at the next step (it saves first); False when not training."""
        return False

    @abstractmethod
    def farewell(self, failure: str | None, result: TrainResult | None) -> list[str]:
        """What to print once the screen is gone: where the weights are, what to run next."""


class EmptySession(Session):
    """Nothing to train, open or follow: the panels alone (the layout's tests)."""

    live_samples = False

    def farewell(self, failure: str | None, result: TrainResult | None) -> list[str]:
        return []


class TrainsHere(Session):
    """Training in this process (a run, or the lecture's rungs): the kinds that pause, save and
    stop apply to. They steer ``trainer``, the one training now."""

    actions = STEERING
    worker_description: ClassVar[str] = "training"  # the training worker's name

    def __init__(self, device: str = "auto") -> None:
        super().__init__(device)
        self.trainer: Trainer | None = None
        self.last_saved: CheckpointSaved | None = None  # the newest checkpoint written
        self._running = False  # the worker is training
        self._run_dir: Path | None = None

    @property
    def run_dir(self) -> Path | None:
        return self._run_dir

    def start(self, panel: TrainingPanel) -> None:
        super().start(panel)

        def work() -> None:
            self.train(panel, get_current_worker().cancelled_event)

        panel.run_worker(work, thread=True, exclusive=True, group="train", exit_on_error=False,
                         description=self.worker_description)

    @abstractmethod
    def train(self, view: SessionView, cancelled: threading.Event) -> None:
        """The training worker (on its own thread): train, showing the work on ``view``."""

    def close(self) -> None:
        # The worker is cancelled with the panel, but the trainer only looks at its control.
        if self.trainer is not None:
            self.trainer.control.stop("app closed")

    @property
    def running(self) -> bool:
        return self._running

    @property
    def paused(self) -> bool:
        return self.trainer is not None and self.trainer.control.paused

    @property
    def can_control(self) -> bool:
        return self.trainer is not None and self._running and not self.trainer.control.stopping

    def toggle_pause(self) -> bool | None:
        if not self.can_control:
            return None
        assert self.trainer is not None
        paused = self.trainer.control.toggle_pause()
        self._post(messages.RunStatus("paused" if paused else "training"))
        return paused

    def request_save(self) -> bool:
        if not self.can_control:
            return False
        assert self.trainer is not None
        self.trainer.control.request_save()
        self._post(messages.LogLine("saving a checkpoint…"))
        return True

    def stop(self, reason: str, exit_code: int = 0) -> bool:
        if self.trainer is None or not self._running:
            return False
        self.trainer.control.stop(reason, exit_code)
        self._post(messages.RunStatus("stopping"))
        return True

    def _post(self, message: Message) -> None:
        if self.panel is not None:
            self.panel.post_message(message)

    def _sample_from(self, view: SessionView, trainer: Trainer) -> None:
        """Prompts and views sample ``trainer``'s weights from now on; until a prompt, the views
        look at two blocks of its held-out text."""
        val, block = trainer.data.val, trainer.mconf.block_size
        view.post_message(messages.ViewText(
            "validation", trainer.setup.tokenizer.decode(val[: 2 * block].tolist())))
        self.live_model.attach_trainer(trainer)
        view.post_message(messages.ModelReady(trainer.step, training=True))

    def _show(self, view: SessionView, event: Event) -> None:
        """Runs on the training thread for every event (70 steps a second and more): note what
        the session keeps, hand the event to the panel, never block."""
        if isinstance(event, TrainingStarted):
            self._run_dir = Path(event.out_dir)
        elif isinstance(event, CheckpointSaved):
            self.last_saved = event
        view.show_event(event)
        if isinstance(event, TrainingStarted):
            view.post_message(messages.LogLine(
                f"training on {event.data} · {count(event.parameters)} parameters · "
                f"{event.device} → {event.out_dir}"))
        elif isinstance(event, StateChanged):
            view.post_message(messages.RunStatus(event.state, event.reason))


class TrainSession(TrainsHere):
    """A run trained here, new or resumed."""

    def __init__(self, source: TrainNew, device: str = "auto") -> None:
        super().__init__(device)
        self.source = source

    def train(self, view: SessionView, cancelled: threading.Event) -> None:
        """The training worker: build the run (which may download its text), then train."""
        view.post_message(messages.LogLine("loading the training text…"))

        def progress(done: int, total: int | None) -> None:
            view.post_message(messages.DownloadProgress(done, total))

        def notice(text: str) -> None:
            view.post_message(messages.LogLine(text, "warning"))

        try:
            setup = self.source.setup_factory(progress, notice)
            sample_at_evaluations(setup)
            bus = EventBus()
            trainer = Trainer(setup, bus, prompts_cut_in=True)
        except Exception as error:  # noqa: BLE001 - a UserError, or a bug: either ends the worker
            view.post_message(messages.TrainingEnded(None, describe(error)))
            return
        bus.subscribe(lambda event: self._show(view, event))
        self.trainer = trainer  # before the look at cancelled: close() then stops it in time
        if cancelled.is_set():
            return
        self._running = True
        self._sample_from(view, trainer)
        try:
            result = trainer.run()
            if (result.state != "failed" and result.best_step is not None
                    and result.best_step != result.step):
                # The trainer put its best weights back: prompts now answer from them, and
                # name their step (the trainer's own step is still the last one).
                model, _ = trainer.snapshot()
                self.live_model.attach_model(model, trainer.setup.tokenizer, result.best_step)
        except Exception as error:  # noqa: BLE001 - e.g. the disk refused a checkpoint
            view.post_message(messages.TrainingEnded(None, describe(error), unsaved=True))
            return
        finally:
            self._running = False
        view.post_message(messages.TrainingEnded(result))

    def farewell(self, failure: str | None, result: TrainResult | None) -> list[str]:
        lines = [f"training failed: {failure}"] if failure else []
        saved = self.last_saved
        if saved is None:
            return [*lines, "no checkpoint was saved"]
        folder = Path(saved.path).parent
        lines.append(f"checkpoint: {saved.path} (step {saved.step})")
        best = folder / BEST_NAME
        if result is not None and result.best_step is not None and best.exists():
            lines.append(f"best weights: {best} (val {result.best_val_loss:.4f} "
                         f"from step {result.best_step})")
        if self.trainer is None:  # a checkpoint was saved, so a trainer ran: never here
            return lines
        setup = self.trainer.setup  # the commands follow the data and the resume rules
        lines.append(f"try: {sample_command(folder, setup.data_name, setup.tokenizer.vocab)}")
        finished = result is not None and result.state == "finished"
        label = "train further" if finished else "continue training"
        command = continue_command(folder, self.trainer.tconf, saved.step, finished, app=True)
        lines.append(f"{label}: {command}")
        return lines


class LectureSession(TrainsHere):
    """The lecture replayed here (``--lecture``): its rungs trained one after another, each a
    run folder of its own. Pause, save and stop steer the rung in training; prompts and views
    sample its weights. Stopping stops the ladder: the rung in training saves, the finished
    ones stay, and no other starts. The worker is the ladder's listener."""

    worker_description = "replaying the lecture"

    def __init__(self, source: ReplayLecture, device: str = "auto") -> None:
        super().__init__(device)
        self.ladder = source.ladder
        self._view: SessionView | None = None  # the worker's, for the listener's calls
        self._rung_val: list[tuple[int, float]] = []  # the rung in training's evaluations

    @property
    def lecture_rungs(self) -> Sequence[Rung]:
        return self.ladder.rungs

    def close(self) -> None:
        self.ladder.stop("app closed", 0)

    def stop(self, reason: str, exit_code: int = 0) -> bool:
        if not self._running:
            return False
        self.ladder.stop(reason, exit_code)
        self._post(messages.RunStatus("stopping"))
        return True

    def train(self, view: SessionView, cancelled: threading.Event) -> None:
        """The training worker: every rung in turn (the ladder calls back at each one)."""
        self._view = view
        self.ladder.bus.subscribe(lambda event: self._show(view, event))
        if cancelled.is_set():
            return
        self._running = True
        try:
            results = self.ladder.run(self)
        except Exception as error:  # noqa: BLE001 - e.g. the disk refused a checkpoint
            view.post_message(messages.TrainingEnded(None, describe(error), unsaved=True))
            return
        finally:
            self._running = False
        finished = [r for r in results if r.state == "finished"]
        if finished:
            took = format_seconds(sum(r.seconds for r in results))
            view.post_message(messages.LogLine(
                f"the lecture, replayed: {len(finished)} of {len(self.ladder.rungs)} rungs in "
                f"{took} → {self.ladder.out_dir}", "good"))
        failed = next((r for r in results if r.state == "failed"), None)
        view.post_message(messages.TrainingEnded(None, None if failed is None else
                                                 f"{failed.rung}: {failed.reason}"))

    # -- the ladder's listener (on the worker) -----------------------------------------------

    def rung_starting(self, rung: Rung, setup: RunSetup, trainer: Trainer,
                      estimate: CostEstimate | None) -> None:
        view = self._view
        assert view is not None
        sample_at_evaluations(setup)  # the trainer reads this same config object
        self._rung_val = []
        self.trainer = trainer
        cost = "" if estimate is None else cost_note(
            rung, estimate, setup.train_config.time_budget, self.ladder.device.type, "Ctrl+Q")
        view.post_message(messages.RungStarted(rung.name, self.ladder.rungs.index(rung),
                                               len(self.ladder.rungs), cost))
        self._sample_from(view, trainer)  # prompts and views: this rung's weights

    def rung_finished(self, result: RungResult) -> None:
        assert self._view is not None
        self._view.post_message(messages.RungFinished(result, tuple(self._rung_val)))

    def _show(self, view: SessionView, event: Event) -> None:
        if isinstance(event, EvalDone):
            if self._rung_val and self._rung_val[-1][0] == event.step:
                self._rung_val.pop()  # the same step measured again (the run's last)
            self._rung_val.append((event.step, event.val_loss))
        super()._show(view, event)

    def farewell(self, failure: str | None, result: TrainResult | None) -> list[str]:
        ladder, folder = self.ladder, self.ladder.out_dir
        lines = [f"training failed: {failure}"] if failure else []
        if (summary := stop_summary(ladder)) is not None:
            lines.append(f"stopped {summary}")
        for row in ladder.results:
            val = "-" if row.val_loss is None else f"{row.val_loss:.4f}"
            lines.append(f"  {row.rung:<12} val {val} ({row.state}) · the lecture's "
                         f"{row.lecture_val_loss:.2f}")
        lines.append(f"the rungs' runs: {folder} (ladder.json holds the table)")
        lines.append(f"try: chargpt-tui runs {folder}")
        lines.append(f"every rung's curves: chargpt-tui --compare {folder}")
        return lines


class CheckpointSession(Session):
    """A trained checkpoint opened for chat: nothing trains, so no steering key applies."""

    live_samples = False

    def __init__(self, source: OpenCheckpoint, device: str = "auto") -> None:
        super().__init__(device)
        self.source = source
        self._opened: SamplingModel | None = None  # set by the loading worker

    @property
    def run_dir(self) -> Path:
        path = self.source.path
        return path if path.is_dir() else path.parent

    def start(self, panel: TrainingPanel) -> None:
        super().start(panel)
        panel.run_worker(lambda: self.open(panel), thread=True, exclusive=True, group="train",
                         exit_on_error=False, description="opening checkpoint")

    def open(self, view: SessionView) -> None:
        """The loading worker: the weights for prompts, then the run's history for the panel,
        told as the events a live run would have published."""
        try:
            loaded = self.source.opened or load_for_sampling(self.source.path, self.device)
        except Exception as error:  # noqa: BLE001 - shown in the log, whatever it was
            view.post_message(messages.TrainingEnded(None, describe(error)))
            return
        self.live_model.attach_model(loaded.model, loaded.tokenizer, loaded.step)
        self._opened = loaded
        for event in loaded.history_events():
            view.post_message(messages.EngineEvent(event))
            if isinstance(event, TrainingStarted):
                view.post_message(messages.LogLine(
                    f"opened {event.out_dir} (step {event.step}, trained on {event.data}) · "
                    f"{event.device}"))
                # After the start, which clears the chart from its step on (as a resumed run's
                # does): the losses the run logged up to the checkpoint's step.
                view.post_message(messages.HistoryLoaded(*loss_history(
                    loaded.file.parent / METRICS_NAME, loaded.step)))
            elif isinstance(event, StateChanged):
                view.post_message(messages.RunStatus(event.state, event.reason))
        view.post_message(messages.ModelReady(loaded.step, training=False))
        # What the views look at before a prompt, as in training (if the run's data is here).
        if (excerpt := loaded.validation_excerpt()) is not None:
            view.post_message(messages.ViewText("validation", excerpt))

    def farewell(self, failure: str | None, result: TrainResult | None) -> list[str]:
        opened = self._opened  # the prompt fits the checkpoint's own text and characters
        if opened is None:
            return [f"try: {sample_command(self.source.path, '', '')}"]
        data, vocab = opened.payload.get("data", ""), opened.tokenizer.vocab
        return [f"try: {sample_command(self.source.path, data, vocab)}"]


class FollowSession(Session):
    """A run trained elsewhere, watched through its metrics.jsonl (read only); prompts answer
    from its newest checkpoint. Nothing trains here, so no steering key applies."""

    sample_placeholder = "this run has logged no live samples (yet)"

    def __init__(self, source: FollowRun, device: str = "auto") -> None:
        super().__init__(device)
        self.source = source
        # One loader for its checkpoint: this session's, and the prompt pane's at each prompt.
        self.live_model.follow_checkpoint(source.run_dir / CHECKPOINT_NAME, device)
        self._reload_pending = False  # UI thread only
        self._data = ""  # the followed run's text, once its start is read

    @property
    def run_dir(self) -> Path:
        return self.source.run_dir

    def start(self, panel: TrainingPanel) -> None:
        super().start(panel)
        # The stats line says "following"; the run's own state goes in its detail.
        panel.post_message(messages.RunStatus(
            "following", f"waiting for {self.run_dir / METRICS_NAME}"))

        def work() -> None:
            self.follow(panel, get_current_worker().cancelled_event)

        panel.run_worker(work, thread=True, exclusive=True, group="train", exit_on_error=False,
                         description="following a run")
        self._load_checkpoint()

    def follow(self, view: SessionView, cancelled: threading.Event) -> None:
        """The following worker: the run's logged events, old and new, shown as live training's
        are. Read only: nothing here writes to the followed folder."""
        try:
            for event in follow_metrics(self.run_dir, cancelled):
                self._show(view, event)
        except Exception as error:  # noqa: BLE001 - say so in the log rather than go quiet
            view.post_message(messages.LogLine(f"stopped following: {describe(error)}", "error"))

    def _show(self, view: SessionView, event: Event) -> None:
        view.show_event(event)
        if isinstance(event, TrainingStarted):
            self._data = event.data
            view.post_message(messages.LogLine(
                f"following {self.run_dir}: {event.data} · {count(event.parameters)} "
                f"parameters · {event.device} · from step {event.step}"))
        elif isinstance(event, CheckpointSaved):
            view.call_later(self._reload_soon)
        elif isinstance(event, StateChanged):
            view.post_message(messages.RunStatus(
                "following", f"run {event.state}" + (f": {event.reason}" if event.reason else "")))

    def _reload_soon(self) -> None:
        """UI thread: reload the checkpoint a moment after a save was announced."""
        if self.panel is not None and not self._reload_pending:
            self._reload_pending = True
            self.panel.set_timer(RELOAD_DELAY, self._reload)

    def _reload(self) -> None:
        self._reload_pending = False
        self._load_checkpoint()

    def _load_checkpoint(self) -> None:
        panel = self.panel
        if panel is not None:
            panel.run_worker(lambda: self.load_newest(panel), thread=True, exclusive=True,
                             group="reload", exit_on_error=False,
                             description="loading the followed run's checkpoint")

    def load_newest(self, view: SessionView) -> None:
        """The reload worker: load the run's checkpoint if the file is newer than the weights
        prompts use (the loader is shared with the prompt pane, which looks at every prompt)."""
        refresh = self.live_model.refresh()
        if refresh.loaded is not None:
            view.post_message(messages.ModelReady(refresh.loaded, training=False))
        elif refresh.problem is not None and not self.live_model.ready:
            view.post_message(messages.ModelUnavailable(refresh.problem))
        elif refresh.problem is not None and refresh.new:  # said once per file; the weights
            view.post_message(messages.LogLine(  # already loaded still answer prompts
                f"could not load the newest checkpoint: {refresh.problem}", "warning"))

    def farewell(self, failure: str | None, result: TrainResult | None) -> list[str]:
        # The suggested prompt must fit the characters of the weights loaded for prompts.
        command = sample_command(self.run_dir, self._data, self.live_model.vocab)
        return [f"followed {self.run_dir}; its newest checkpoint: {command}"]


def session_for(source: Source | None, device: str = "auto") -> Session:
    """The session that shows ``source`` (None: the panels alone)."""
    if isinstance(source, TrainNew):
        return TrainSession(source, device)
    if isinstance(source, ReplayLecture):
        return LectureSession(source, device)
    if isinstance(source, OpenCheckpoint):
        return CheckpointSession(source, device)
    if isinstance(source, FollowRun):
        return FollowSession(source, device)
    return EmptySession(device)
