"""The training panel: shows what the app's session reports, and nothing else.

Stats line, loss chart, live samples and log for a run trained here, a run followed from
elsewhere, or a checkpoint opened for chat: which one is the session's business
(:mod:`chargpt_tui.tui.session`), whose workers run on this panel's node so they end with it.
They never touch a widget: engine events come in through :meth:`TrainingPanel.show_event`,
which is thread-safe (steps coalesce, live-sample characters go through a queue that a 30 Hz
timer drains), and everything else arrives as a message. Replaying the lecture, a ladder panel
lists the rungs, and the chart and the live sample follow them rung by rung.
"""

from __future__ import annotations

import queue
import statistics
from collections.abc import Sequence
from dataclasses import replace

from textual.app import ComposeResult
from textual.containers import Vertical

from chargpt_tui.events import (
    CheckpointSaved,
    EvalDone,
    EvalProgress,
    Event,
    Notice,
    SampleChunk,
    StateChanged,
    StepDone,
    TrainingStarted,
)
from chargpt_tui.lecture import Rung
from chargpt_tui.presets import recipe_of
from chargpt_tui.tui import messages
from chargpt_tui.tui.formatting import count
from chargpt_tui.tui.widgets.event_log import EventLog
from chargpt_tui.tui.widgets.ladder_panel import LadderPanel
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


def thin(points: tuple[tuple[int, float], ...]) -> tuple[tuple[int, float], ...]:
    """Halve a long history by averaging neighbours (keeps the curve's shape, bounds memory)."""
    pairs = zip(points[0::2], points[1::2])
    return tuple((b[0], statistics.fmean((a[1], b[1]))) for a, b in pairs)


class TrainingPanel(Vertical):
    """Stats line, loss chart, live sample and log for what the app's session shows: a run
    trained here or followed, or an opened checkpoint. It draws; the session steers."""

    def __init__(self, *, sample_placeholder: str = LiveSample.PLACEHOLDER,
                 show_timing: bool = True, rungs: Sequence[Rung] = (),
                 id: str | None = None) -> None:
        super().__init__(id=id)
        self.sample_placeholder = sample_placeholder
        self.show_timing = show_timing
        self.rungs = tuple(rungs)  # the lecture's, replayed here (``--lecture``): a ladder panel
        if self.rungs:
            self.add_class("-lecture")
        self._samples: queue.SimpleQueue[SampleChunk] = queue.SimpleQueue()
        self._sample_open = False  # the producing thread's: a sample began and has not ended
        # (step, loss), or (step, None) when a run (re)starts at ``step``: older points from
        # that step on belong to a history it rewound (a resume after a crash).
        self._losses: queue.SimpleQueue[tuple[int, float | None]] = queue.SimpleQueue()
        # The newest step, written by the producing thread, shown by the UI's progress timer.
        self._latest_step: StepDone | None = None
        self._shown_step: StepDone | None = None  # UI thread only
        self._ticks = 0  # UI thread only

    def compose(self) -> ComposeResult:
        yield StatsLine(show_timing=self.show_timing, id="stats")
        if self.rungs:
            yield LadderPanel(self.rungs, id="ladder")
        yield LossChart(id="loss-chart")
        yield LiveSample(id="live-sample", placeholder=self.sample_placeholder)
        yield EventLog(id="event-log")

    def on_mount(self) -> None:
        self.border_title = "training"
        # Ticks only while a sample streams: an idle tick still wakes the UI 30 times a second,
        # and on a 2-core CPU each wake-up stalls a training thread.
        self._sample_timer = self.set_interval(DRAIN_INTERVAL, self._drain_samples, pause=True)
        self.set_interval(PROGRESS_INTERVAL, self._show_progress)

    def show_event(self, event: Event) -> None:
        """Show an event of a live run. Safe from any thread, and quick: the training thread
        calls it for every event.

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
            tokens_per_second=step.tokens_per_second, eta=step.eta,
            # under a time budget, the budget's clock (it matches the wall clock)
            elapsed=step.elapsed if step.budget_used is None else step.budget_used,
            budget=step.budget_seconds)

    def on_run_status(self, message: messages.RunStatus) -> None:
        detail = self.stats.detail if message.detail is None else message.detail
        self.query_one(StatsLine).stats = replace(self.stats, state=message.state, detail=detail)
        message.stop()

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
            chart = self.query_one(LossChart)  # a resumed run may rewind its history
            chart.val_points = tuple(p for p in chart.val_points if p[0] < event.step)
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
            if self.rungs:
                self.query_one(LadderPanel).live_val(event.val_loss)
        elif isinstance(event, CheckpointSaved):
            self.log_line(f"saved {event.path} (step {event.step}, {event.reason})", "good")
        elif isinstance(event, StateChanged):
            self._drain_losses()  # a pause or the end shows the curve to its last step
            if event.state in ("stopped", "failed", "finished"):
                level = "error" if event.state == "failed" else "info"
                self.log_line(f"training {event.state}"
                              + (f": {event.reason}" if event.reason else ""), level)
        elif isinstance(event, Notice):
            self.log_line(event.message, event.level)
        elif isinstance(event, EvalProgress):
            stats_line.stats = replace(stats_line.stats,
                                       evaluated=f"{event.done}/{event.total} batches")

    def on_training_ended(self, message: messages.TrainingEnded) -> None:
        if message.error:
            self.log_line(message.error, "error")
            self.query_one(StatsLine).stats = replace(self.stats, state="failed")
            self.notify(message.error, title="training", severity="error", timeout=10)
        # Bubbles on to the app, which may be waiting for it to quit.

    def on_rung_started(self, message: messages.RungStarted) -> None:
        """The lecture's next rung: the chart and the samples start again under its name (the
        rung's TrainingStarted, next in the queue, clears the live curves)."""
        message.stop()
        self._drain_samples()  # the last rung's sample text, still under its name
        self.border_title = f"lecture · {message.rung} ({message.index + 1}/{message.total})"
        self.query_one(LadderPanel).rung_started(message.rung)
        stats_line = self.query_one(StatsLine)  # the last rung's best is not this one's
        stats_line.stats = replace(stats_line.stats, best="", evaluated="")
        self.query_one(LossChart).live_label = message.rung
        self.query_one(LiveSample).begin_section(message.rung)
        if message.cost:  # said before the rung trains, also where the log is hidden (80×24)
            self.log_line(message.cost, "warning")
            self.notify(message.cost, title=message.rung, severity="warning", timeout=20)

    def on_rung_finished(self, message: messages.RungFinished) -> None:
        message.stop()
        result = message.result
        self.query_one(LadderPanel).rung_finished(result.rung, result.state, result.val_loss)
        if message.val:
            self.query_one(LossChart).add_rung_curve(result.rung, message.val)
        val = "" if result.val_loss is None else f" · val {result.val_loss:.3f}"
        self.log_line(f"{result.rung} {result.state}{val} (the lecture: "
                      f"{result.lecture_val_loss:.2f})", "good" if result.state == "finished"
                      else "warning")
        if result.sample:
            self._drain_samples()
            self.query_one(LiveSample).add_whole(
                result.steps, f"{result.rung} finished{val}", result.sample)

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
