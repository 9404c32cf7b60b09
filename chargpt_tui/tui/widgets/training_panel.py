"""The training panel: owns the training worker and shows what the engine's events say.

It shows one of three things: a run it trains itself, a checkpoint opened for chat only, or a
run it follows (``--follow``): someone else's training, read from its ``metrics.jsonl``.

The worker runs the engine's :class:`~chargpt_tui.train.Trainer` on a thread. It never touches a
widget: engine events become messages posted to this panel (progress messages coalesce), and
live-sample characters go through a queue that a 30 Hz timer drains. Keeping the worker on the
widget that shows it means the worker dies with the widget — no teardown races.
"""

from __future__ import annotations

import queue
import statistics
from dataclasses import replace
from pathlib import Path

from textual import work
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.worker import get_current_worker

from chargpt_tui.checkpoint import load_for_sampling
from chargpt_tui.errors import describe
from chargpt_tui.events import (
    CheckpointSaved,
    EvalDone,
    Event,
    EventBus,
    Notice,
    SampleChunk,
    StateChanged,
    StepDone,
    TrainingStarted,
)
from chargpt_tui.presets import recipe_of
from chargpt_tui.run_setup import sample_at_evaluations
from chargpt_tui.runs import CHECKPOINT_NAME, METRICS_NAME, follow_metrics, loss_history
from chargpt_tui.train import Trainer
from chargpt_tui.tui import messages
from chargpt_tui.tui.formatting import count
from chargpt_tui.tui.live_model import ModelSource
from chargpt_tui.tui.sources import FollowRun, OpenCheckpoint, Source, TrainNew
from chargpt_tui.tui.widgets.event_log import EventLog
from chargpt_tui.tui.widgets.live_sample import LiveSample
from chargpt_tui.tui.widgets.loss_chart import LossChart
from chargpt_tui.tui.widgets.stats_line import Stats, StatsLine

DRAIN_INTERVAL = 1 / 30  # live-sample text: smooth streaming (the timer sleeps between samples)
# Redraws take the cores from training, and on a CPU a little goes a long way: while the UI
# draws, one of training's threads waits at a barrier for the other. At the gpu-pace preset
# (2 cores) the UI thread used 10 % of a core with a 4 Hz chart and 10 Hz stats, 6 % at 1 Hz
# and 2 Hz, and training ran at 0.88× and 0.95× of the app-less pace (one in-process run).
# Each frame also redraws the panel's other widgets, so the chart is redrawn in the same frame
# as every second stats update, never in a frame of its own.
PROGRESS_INTERVAL = 0.5  # seconds between stats-line updates (htop: 1.5 s)
CHART_EVERY = 2  # the loss chart is redrawn at every second stats update: once a second
MAX_TRAIN_POINTS = 4000  # older points are thinned: the chart only has ~100 columns anyway
# A followed run's checkpoint is reloaded this long after a CheckpointSaved, once for all the
# saves announced meanwhile: replaying a long history announces many at once, a tiny model
# saves several a second, and only the newest file exists anyway.
RELOAD_DELAY = 0.3


def thin(points: tuple[tuple[int, float], ...]) -> tuple[tuple[int, float], ...]:
    """Halve a long history by averaging neighbours (keeps the curve's shape, bounds memory)."""
    pairs = zip(points[0::2], points[1::2])
    return tuple((b[0], statistics.fmean((a[1], b[1]))) for a, b in pairs)


class TrainingPanel(Vertical):
    """Stats line, loss chart, live sample and log for one run (trained here or followed), or
    for one opened checkpoint."""

    def __init__(self, live_model: ModelSource, source: Source | None = None, *,
                 device: str = "auto", show_timing: bool = True, id: str | None = None) -> None:
        super().__init__(id=id)
        self.live_model = live_model
        self.run_source = source
        # The folder of a run trained elsewhere, when following one.
        self.follow = source.run_dir if isinstance(source, FollowRun) else None
        self.device = device
        if self.follow is not None:  # one loader for its checkpoint: this panel's, and prompts'
            live_model.follow_checkpoint(self.follow / CHECKPOINT_NAME, device)
        self.show_timing = show_timing
        self.trainer: Trainer | None = None
        self.running = False  # the worker is inside Trainer.run
        self._samples: queue.SimpleQueue[SampleChunk] = queue.SimpleQueue()
        self._sample_open = False  # the producing thread's: a sample began and has not ended
        # (step, loss), or (step, None) when a run (re)starts at ``step``: older points from
        # that step on belong to a history it rewound (a resume after a crash).
        self._losses: queue.SimpleQueue[tuple[int, float | None]] = queue.SimpleQueue()
        self._reload_pending = False
        self.last_saved: CheckpointSaved | None = None  # the newest checkpoint written
        # The newest step, written by the training thread, shown by the UI's progress timer.
        self._latest_step: StepDone | None = None
        self._shown_step: StepDone | None = None  # UI thread only
        self._ticks = 0  # UI thread only

    def compose(self) -> ComposeResult:
        yield StatsLine(show_timing=self.show_timing, id="stats")
        yield LossChart(id="loss-chart")
        if self.follow is None:
            yield LiveSample(id="live-sample")
        else:  # only a run configured to sample (the app's own runs do) logs samples
            yield LiveSample(id="live-sample",
                             placeholder="this run has logged no live samples (yet)")
        yield EventLog(id="event-log")

    def on_mount(self) -> None:
        self.border_title = "training"
        # Ticks only while a sample streams: an idle tick still wakes the UI 30 times a second,
        # and on a 2-core CPU each wake-up stalls a training thread.
        self._sample_timer = self.set_interval(DRAIN_INTERVAL, self._drain_samples, pause=True)
        self.set_interval(PROGRESS_INTERVAL, self._show_progress)
        source = self.run_source
        if isinstance(source, OpenCheckpoint):
            self.open_checkpoint(source)
        elif isinstance(source, FollowRun):
            self.query_one(StatsLine).stats = replace(self.stats,
                state="following", detail=f"waiting for {source.run_dir / METRICS_NAME}")
            self.follow_run(source.run_dir)
            self.load_followed_checkpoint()
        elif isinstance(source, TrainNew):
            self.train(source)

    def on_unmount(self) -> None:
        # The worker is cancelled with this widget, but the trainer only looks at its control.
        if self.trainer is not None:
            self.trainer.control.stop("app closed")

    # -- controls (called by the app's key bindings) ------------------------------------------

    @property
    def can_control(self) -> bool:
        return self.trainer is not None and self.running and not self.trainer.control.stopping

    def toggle_pause(self) -> bool | None:
        """Pause or resume; returns True when now paused, None when nothing is training."""
        if not self.can_control:
            return None
        assert self.trainer is not None
        paused = self.trainer.control.toggle_pause()
        self.query_one(StatsLine).stats = replace(self.stats,
            state="paused" if paused else "training")
        return paused

    def request_save(self) -> bool:
        if not self.can_control:
            return False
        assert self.trainer is not None
        self.trainer.control.request_save()
        self.log_line("saving a checkpoint…")
        return True

    def stop(self, reason: str, exit_code: int = 0) -> bool:
        """Ask training to stop at the next step (it saves first); False if not training."""
        if self.trainer is None or not self.running:
            return False
        self.trainer.control.stop(reason, exit_code)
        self.query_one(StatsLine).stats = replace(self.stats, state="stopping")
        return True

    # -- workers ------------------------------------------------------------------------------

    @work(thread=True, exclusive=True, group="train", exit_on_error=False,
          description="training")
    def train(self, source: TrainNew) -> None:
        worker = get_current_worker()
        self.post_message(messages.LogLine("loading the training text…"))
        def progress(done: int, total: int | None) -> None:
            self.post_message(messages.DownloadProgress(done, total))

        def notice(text: str) -> None:
            self.post_message(messages.LogLine(text, "warning"))

        try:
            setup = source.setup_factory(progress, notice)
            sample_at_evaluations(setup)
            bus = EventBus()
            trainer = Trainer(setup, bus)
        except Exception as error:  # noqa: BLE001 - a UserError, or a bug: either ends the worker
            self.post_message(messages.TrainingEnded(None, describe(error)))
            return
        if worker.is_cancelled:
            return
        bus.subscribe(self._forward)
        self.trainer = trainer
        # Two blocks of held-out text: what the views show when there is no prompt yet.
        val, block = trainer.data.val, trainer.mconf.block_size
        self.post_message(messages.ViewText(
            "validation", setup.tokenizer.decode(val[: 2 * block].tolist())))
        self.live_model.attach_trainer(trainer)
        self.running = True
        self.post_message(messages.ModelReady(trainer.step, training=True))
        try:
            result = trainer.run()
            if (result.state != "failed" and result.best_step is not None
                    and result.best_step != result.step):
                # The trainer put its best weights back: prompts now answer from them, and
                # name their step (the trainer's own step is still the last one).
                model, _ = trainer.snapshot()
                self.live_model.attach_model(model, trainer.setup.tokenizer, result.best_step)
        except Exception as error:  # noqa: BLE001 - e.g. the disk refused a checkpoint
            self.post_message(messages.TrainingEnded(None, describe(error), unsaved=True))
            return
        finally:
            self.running = False
        self.post_message(messages.TrainingEnded(result))

    def _forward(self, event: Event) -> None:
        """Runs on the training thread for every event: hand it over, never block.

        A small model takes 70 steps a second on a CPU and a GPU more: a step only leaves its
        loss in a queue (the chart averages them all) and itself in ``_latest_step``, which the
        UI's progress timer shows. Any other event is posted at once, after the latest step, so
        a pause or an evaluation shows the exact step it happened at.
        """
        if isinstance(event, SampleChunk):
            self._samples.put(event)
            if not self._sample_open:  # after the put: the woken timer finds it
                self.post_message(messages.SampleStreaming())
            self._sample_open = not event.final
            return
        if isinstance(event, TrainingStarted):
            self._losses.put((event.step, None))
        if isinstance(event, StepDone):
            self._losses.put((event.step, event.loss))
            self._latest_step = event
            return
        latest = self._latest_step
        if latest is not None:
            self.post_message(messages.TrainingProgress(latest))
        self.post_message(messages.EngineEvent(event))

    def _show_progress(self) -> None:
        """The progress timer: the newest step in the stats line and, every ``CHART_EVERY``
        ticks, new losses in the chart: one frame for both."""
        self._ticks += 1
        latest = self._latest_step
        if latest is not None and latest is not self._shown_step:
            self._show_step(latest)
        if self._ticks % CHART_EVERY == 0:
            self._drain_losses()

    @work(thread=True, exclusive=True, group="train", exit_on_error=False,
          description="following a run")
    def follow_run(self, run_dir: Path) -> None:
        """Feed a run's logged events, old and new, through the same path as live training.
        Read only: nothing here writes to the followed folder."""
        worker = get_current_worker()
        try:
            for event in follow_metrics(run_dir, worker.cancelled_event):
                self._forward(event)
        except Exception as error:  # noqa: BLE001 - say so in the log rather than go quiet
            self.post_message(messages.LogLine(f"stopped following: {describe(error)}", "error"))

    def _reload_followed_checkpoint(self) -> None:
        self._reload_pending = False
        self.load_followed_checkpoint()

    @work(thread=True, exclusive=True, group="reload", exit_on_error=False,
          description="loading the followed run's checkpoint")
    def load_followed_checkpoint(self) -> None:
        """Load the followed run's checkpoint if the file is newer than the weights prompts use
        (the loader is shared with the prompt pane, which looks again at every prompt)."""
        refresh = self.live_model.refresh()
        if refresh.loaded is not None:
            self.post_message(messages.ModelReady(refresh.loaded, training=False))
        elif refresh.problem is not None and not self.live_model.ready:
            self.post_message(messages.ModelUnavailable(refresh.problem))
        elif refresh.problem is not None and refresh.new:  # said once per file; the weights
            self.post_message(messages.LogLine(  # already loaded still answer prompts
                f"could not load the newest checkpoint: {refresh.problem}", "warning"))

    @work(thread=True, exclusive=True, group="train", exit_on_error=False,
          description="opening checkpoint")
    def open_checkpoint(self, source: OpenCheckpoint) -> None:
        try:
            loaded = source.opened or load_for_sampling(source.path, self.device)
        except Exception as error:  # noqa: BLE001 - shown in the log, whatever it was
            self.post_message(messages.TrainingEnded(None, describe(error)))
            return
        self.live_model.attach_model(loaded.model, loaded.tokenizer, loaded.step)
        self.post_message(messages.HistoryLoaded(*loss_history(
            loaded.file.parent / METRICS_NAME, loaded.step)))
        for event in loaded.history_events():
            self.post_message(messages.EngineEvent(event))
        self.post_message(messages.ModelReady(loaded.step, training=False))
        # What the views look at before a prompt, as in training (if the run's data is here).
        if (excerpt := loaded.validation_excerpt()) is not None:
            self.post_message(messages.ViewText("validation", excerpt))

    # -- message handlers (UI thread) ---------------------------------------------------------

    @property
    def stats(self) -> Stats:
        return self.query_one(StatsLine).stats

    def log_line(self, text: str, level: str = "info") -> None:
        self.query_one(EventLog).add(text, level)

    def on_training_progress(self, message: messages.TrainingProgress) -> None:
        self._show_step(message.step)
        message.stop()

    def _show_step(self, step: StepDone) -> None:
        self._shown_step = step
        stats = self.stats
        self.query_one(StatsLine).stats = replace(stats,
            step=step.step, max_iters=step.max_iters, lr=step.lr,
            tokens_per_second=step.tokens_per_second, elapsed=step.elapsed, eta=step.eta,
            # Training clears the download progress; a followed run keeps its own state.
            detail=stats.detail if self.follow is not None else "")

    def on_download_progress(self, message: messages.DownloadProgress) -> None:
        total = f" of {count(message.total)}B" if message.total else ""
        self.query_one(StatsLine).stats = replace(self.stats,
            detail=f"downloading {count(message.done)}B{total}")
        message.stop()

    def on_history_loaded(self, message: messages.HistoryLoaded) -> None:
        chart = self.query_one(LossChart)
        chart.train_points = tuple(message.train[-MAX_TRAIN_POINTS:])
        chart.val_points = tuple(message.val)
        message.stop()

    def on_log_line(self, message: messages.LogLine) -> None:
        self.log_line(message.text, message.level)
        message.stop()

    def on_engine_event(self, message: messages.EngineEvent) -> None:
        event = message.event
        stats_line = self.query_one(StatsLine)
        if isinstance(event, TrainingStarted):
            train = event.config.get("train", {})
            recipe = (recipe_of({**event.config.get("model", {}), **train})
                      if event.config else "")  # an opened checkpoint's config is not known
            stats_line.stats = replace(stats_line.stats,
                step=event.step, max_iters=event.max_iters, device=event.device,
                parameters=event.parameters, detail="", recipe=recipe,
                steps_estimated=bool(train.get("time_budget")))
            if isinstance(self.run_source, OpenCheckpoint):
                self.log_line(f"opened {event.out_dir} (step {event.step}, trained on "
                              f"{event.data}) · {event.device}")
            elif self.follow is not None:
                chart = self.query_one(LossChart)  # a resumed run may rewind its history
                chart.val_points = tuple(p for p in chart.val_points if p[0] < event.step)
                self.log_line(f"following {self.follow}: {event.data} · "
                              f"{count(event.parameters)} parameters · {event.device} · "
                              f"from step {event.step}")
            else:
                self.log_line(f"training on {event.data} · {count(event.parameters)} "
                              f"parameters · {event.device} → {event.out_dir}")
        elif isinstance(event, EvalDone):
            if event.best_step is not None:
                stats_line.stats = replace(stats_line.stats, best=f"best val "
                                           f"{event.best_val_loss:.2f} @ step {event.best_step}")
            self._drain_losses()  # the train curve up to this evaluation, in the same frame
            chart = self.query_one(LossChart)
            if not chart.val_points or chart.val_points[-1][0] != event.step:
                chart.val_points = (*chart.val_points, (event.step, event.val_loss))
            self.log_line(f"step {event.step}: train {event.train_loss:.3f} · val "
                          f"{event.val_loss:.3f}")
        elif isinstance(event, CheckpointSaved):
            self.last_saved = event
            self.log_line(f"saved {event.path} (step {event.step}, {event.reason})", "good")
            if self.follow is not None and not self._reload_pending:
                self._reload_pending = True
                self.set_timer(RELOAD_DELAY, self._reload_followed_checkpoint)
        elif isinstance(event, StateChanged):
            self._drain_losses()  # a pause or the end shows the curve to its last step
            if self.follow is not None:  # the run's own state, next to ours
                detail = f"run {event.state}" + (f": {event.reason}" if event.reason else "")
                stats_line.stats = replace(stats_line.stats, state="following", detail=detail)
            else:
                stats_line.stats = replace(stats_line.stats, state=event.state, detail=event.reason)
            if event.state in ("stopped", "failed", "finished"):
                level = "error" if event.state == "failed" else "info"
                self.log_line(f"training {event.state}"
                              + (f": {event.reason}" if event.reason else ""), level)
        elif isinstance(event, Notice):
            self.log_line(event.message, event.level)

    def on_training_ended(self, message: messages.TrainingEnded) -> None:
        if message.error:
            self.log_line(message.error, "error")
            self.query_one(StatsLine).stats = replace(self.stats, state="failed")
            self.notify(message.error, title="training", severity="error", timeout=10)
        # Bubbles on to the app, which may be waiting for it to quit.

    def _drain_losses(self) -> None:
        if self._losses.empty():
            return
        chart = self.query_one(LossChart)
        points = list(chart.train_points)
        while True:
            try:
                step, loss = self._losses.get_nowait()
            except queue.Empty:
                break
            if loss is None:
                points = [point for point in points if point[0] < step]
            else:
                points.append((step, loss))
        thinned = tuple(points)
        while len(thinned) > MAX_TRAIN_POINTS:
            thinned = thin(thinned)
        chart.train_points = thinned

    def on_sample_streaming(self, message: messages.SampleStreaming) -> None:
        message.stop()
        self._drain_samples()  # the first characters now, not at the next tick
        if not self.query_one(LiveSample).done:  # (a followed run logs whole samples)
            self._sample_timer.resume()  # the rest as it comes

    def _drain_samples(self) -> None:
        """Show the queued sample text; the timer sleeps once a sample's end is shown."""
        if self._samples.empty():
            return
        view = self.query_one(LiveSample)
        pieces: list[str] = []
        done = False
        while True:
            try:
                chunk = self._samples.get_nowait()
            except queue.Empty:
                break
            if view.step != chunk.step:
                if pieces:
                    view.extend("".join(pieces), done)
                pieces = []
                view.start(chunk.step)
            pieces.append(chunk.text)
            done = chunk.final
        if pieces:
            view.extend("".join(pieces), done)
        if done:  # the next sample's first chunk wakes the timer again
            self._sample_timer.pause()
