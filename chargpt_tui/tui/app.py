"""The chargpt-tui app: composes the training panel and the prompt pane, owns the keys.

What it shows is its session's (:mod:`chargpt_tui.tui.session`): a run trained here, the
lecture's rungs trained one after another, an opened checkpoint or a followed run. The app asks
the session which keys apply and passes it pause, save and stop; everything heavy happens in
thread workers. The app routes messages between
panels (they never reach into each other) and runs the quit sequence: stop training at a step
boundary, which saves a checkpoint, then exit — asking only when that save failed.
"""

from __future__ import annotations

import asyncio
import functools
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar, cast

from textual import work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Horizontal
from textual.screen import Screen

from chargpt_tui.device import ThreadPerTask
from chargpt_tui.errors import describe
from chargpt_tui.events import EvalDone, StateChanged
from chargpt_tui.exit_codes import SIGNAL_EXIT_CODES
from chargpt_tui.explain import Curves, compare_label, run_curves
from chargpt_tui.train import TrainResult
from chargpt_tui.tui import messages
from chargpt_tui.tui.live_model import ModelSource
from chargpt_tui.tui.screens.attention import AttentionScreen
from chargpt_tui.tui.screens.compare import CompareScreen
from chargpt_tui.tui.screens.confirm_quit import ConfirmQuitScreen
from chargpt_tui.tui.screens.embeddings import EmbeddingsScreen
from chargpt_tui.tui.screens.explain_base import ExplainScreen, ViewContext, open_view
from chargpt_tui.tui.screens.help import HelpScreen
from chargpt_tui.tui.screens.model_view import ModelViewScreen
from chargpt_tui.tui.screens.surprise import SurpriseScreen
from chargpt_tui.tui.session import STEERING, session_for
from chargpt_tui.tui.sources import Source
from chargpt_tui.tui.widgets.footer import Footer
from chargpt_tui.tui.widgets.loss_chart import LossChart
from chargpt_tui.tui.widgets.prompt_input import PromptInput
from chargpt_tui.tui.widgets.prompt_pane import PromptPane
from chargpt_tui.tui.widgets.training_panel import TrainingPanel

HERE = Path(__file__).parent
STYLESHEETS = [
    "app.tcss",
    *(f"widgets/{name}.tcss" for name in (
        "training_panel", "stats_line", "ladder_panel", "loss_chart", "live_sample", "event_log",
        "prompt_pane", "transcript", "next_chars")),
    *(f"screens/{name}.tcss" for name in ("help", "settings", "attention", "confirm_quit",
                                          "explain_base", "model_view", "surprise",
                                          "embeddings", "compare")),
]
QUIT_SAVE_TIMEOUT = 60.0  # seconds to wait for the final checkpoint before exiting anyway
VIEW_TEXT_ORDER = ("last prompt", "live sample", "validation")  # the most useful first
SIGNAL_EXIT_GRACE = 5.0  # seconds a signalled app gets to exit normally after its last save

Handler = TypeVar("Handler", bound=Callable[..., None])


def while_running(handler: Handler) -> Handler:
    """Skip a message that reaches the app after its shutdown began: the screens the handler
    would update are being taken down. (A terminal run stops reading messages first; Pilot's
    ``run_test`` shuts down while the app still reads them, e.g. a run's replayed history.)"""

    @functools.wraps(handler)
    def guarded(app: App[Any], *args: Any) -> None:
        if app.is_running:
            handler(app, *args)

    return cast(Handler, guarded)


class ChargptApp(App[int]):
    TITLE = "chargpt-tui"
    CSS_PATH = [HERE / name for name in STYLESHEETS]
    AUTO_FOCUS = "#prompt-input"
    # Side by side from 100 columns; stacked (and compacted) below, e.g. on 80×24.
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (100, "-wide")]
    VERTICAL_BREAKPOINTS = [(0, "-short"), (30, "-tall")]
    BINDINGS = [
        Binding("ctrl+t", "pause", "pause", priority=True, tooltip="Pause training"),
        Binding("ctrl+t", "resume", "resume", priority=True, tooltip="Resume training"),
        Binding("f5", "toggle_pause", "pause/resume", show=False, priority=True),
        Binding("ctrl+s", "save", "save", priority=True, tooltip="Save a checkpoint now"),
        Binding("ctrl+q", "quit", "quit", priority=True, tooltip="Save a checkpoint and quit"),
        Binding("f1", "help", "help"),
        Binding("f4", "attention", "attn", tooltip="Attention over the last prompt"),
        Binding("f7", "model_view", "heads", tooltip="Every layer's and head's attention"),
        Binding("f8", "surprise", "surprise", tooltip="The model's loss on each character"),
        Binding("f9", "embeddings", "embed", tooltip="The characters' embeddings, projected"),
        Binding("f10", "compare", "compare", tooltip="Lay another run's curves over the chart"),
    ]

    def __init__(self, source: Source | None = None, *,
                 compare: list[tuple[str, Curves]] | None = None, device: str = "auto",
                 show_timing: bool = True, handle_signals: bool = False) -> None:
        super().__init__()
        self.session = session_for(source, device)  # None: the panels alone (layout tests)
        self.handle_signals = handle_signals
        self.compare = compare  # [(label, curves)] laid over the chart; --compare or F10
        self.compare_folder = ""  # what F10 last applied, offered again for editing
        # What the views look at, kept from ViewText messages (the run's folder is the session's).
        self.view_texts: dict[str, str] = {}
        self._quit_code: int | None = None
        self._unsaved_error: str | None = None  # why training's last checkpoint write failed
        self._failure: str | None = None  # why training failed: quitting then exits 1
        self._result: TrainResult | None = None
        # Kept as attributes: the actions need them while another screen is on top.
        self.training = TrainingPanel(sample_placeholder=self.session.sample_placeholder,
                                      show_timing=show_timing,
                                      rungs=self.session.lecture_rungs, id="training")
        self.prompt = PromptPane(self.live_model, show_timing=show_timing, id="prompt")

    def compose(self) -> ComposeResult:
        with Horizontal(id="main"):
            yield self.training
            yield self.prompt
        yield Footer()

    @property
    def live_model(self) -> ModelSource:
        """The weights prompts and views sample: the session's."""
        return self.session.live_model

    @property
    def run_dir(self) -> Path | None:
        """The run's folder, for the views (a trained run's is known once it starts)."""
        return self.session.run_dir

    def on_load(self) -> None:
        # Before any worker starts: each runs on a thread of its own (see device.ThreadPerTask).
        asyncio.get_running_loop().set_default_executor(ThreadPerTask("chargpt-worker"))

    def on_mount(self) -> None:
        self.session.start(self.training)
        if self.compare:
            self.query_one(LossChart).set_overlays(
                [(label, curves.steps, curves.val) for label, curves in self.compare])
        if self.handle_signals:
            loop = asyncio.get_running_loop()
            for signum in SIGNAL_EXIT_CODES:
                loop.add_signal_handler(signum, self._on_signal, signum)

    def on_unmount(self) -> None:
        self.session.close()

    def _on_signal(self, signum: int) -> None:
        """SIGINT/SIGTERM/SIGHUP: stop training (it saves a checkpoint), exit with 128+signal.

        Ctrl+C typed in the app is a key (the terminal is in raw mode), not SIGINT: this
        handles SIGINT sent by another process, e.g. ``kill -INT`` or a job scheduler."""
        name = signal.Signals(signum).name
        code = SIGNAL_EXIT_CODES[signum]
        self.begin_quit(code, f"received {name}", ask=False)
        threading.Thread(target=self._exit_when_saved, args=(code,), daemon=True,
                         name="exit-after-signal").start()

    def _exit_when_saved(self, code: int) -> None:
        """Make sure a signalled app ends, even when its terminal is gone.

        After an SSH drop (SIGHUP with the terminal closed), Textual's shutdown was seen to
        block for ever writing the terminal-restore sequence to the dead terminal. Once training
        has stopped and saved (or the save timeout passed), the orderly exit gets a grace
        period; then the process ends with the signal's exit code. Nothing is lost by then.
        """
        deadline = time.monotonic() + QUIT_SAVE_TIMEOUT
        while self.session.running and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(SIGNAL_EXIT_GRACE)
        os._exit(code)

    # -- key actions -------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in STEERING:
            return self.session.allows(action)  # e.g. hidden where nothing trains here
        return True

    def action_pause(self) -> None:
        self.action_toggle_pause()

    def action_resume(self) -> None:
        self.action_toggle_pause()

    def action_toggle_pause(self) -> None:
        paused = self.session.toggle_pause()
        if paused is not None:
            # The cursor follows the key at once; the trainer's StateChanged, a step later,
            # says the same again.
            self.prompt.show_training(not paused)
            self.refresh_bindings()

    def action_save(self) -> None:
        if not self.session.request_save():
            self.notify("nothing is training; the last checkpoint is already on disk",
                        severity="warning")

    async def action_quit(self) -> None:
        self.begin_quit(0, "quit")

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    def action_attention(self) -> None:
        self._open_view(AttentionScreen)

    def action_model_view(self) -> None:
        self._open_view(ModelViewScreen)

    def action_surprise(self) -> None:
        self._open_view(SurpriseScreen)

    def action_embeddings(self) -> None:
        self._open_view(EmbeddingsScreen)

    def _open_view(self, kind: type[ExplainScreen[Any]]) -> None:
        if not isinstance(self.screen, kind):
            open_view(self, kind(self.view_context()))

    def view_context(self) -> ViewContext:
        typed = self.prompt.query_one(PromptInput).value  # what is on the prompt line now
        texts = {"typed text": typed} if typed.strip() else {}
        texts.update((name, self.view_texts[name]) for name in VIEW_TEXT_ORDER
                     if name in self.view_texts)
        return ViewContext(self.live_model, self.run_dir, texts,
                           live_samples=self.session.live_samples)

    def action_compare(self) -> None:
        def chosen(folder: str | None) -> None:
            if folder is None:
                return
            self.compare_folder = folder
            if folder:
                self.load_compare(Path(folder))
            else:
                self.compare = None
                self.query_one(LossChart).clear_overlay()

        if not isinstance(self.screen, CompareScreen):
            self.push_screen(CompareScreen(self.compare_folder), chosen)

    @work(thread=True, exclusive=True, group="compare", exit_on_error=False,
          description="reading a run's curves")
    def load_compare(self, folder: Path) -> None:
        try:
            curves = run_curves(folder)
        except Exception as error:  # noqa: BLE001 - a UserError or an unreadable file: say so
            self.post_message(messages.CompareLoaded(compare_label(folder), None,
                                                     describe(error)))
            return
        self.post_message(messages.CompareLoaded(compare_label(folder), curves))

    def show_compare(self, label: str, curves: Curves) -> None:
        # The chart's own train line is every step's loss, its val line the evaluations.
        self.query_one(LossChart).set_overlays([(label, curves.steps, curves.val)])

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        prompt = self.prompt
        yield SystemCommand("Pause / resume training", "Ctrl+T or F5", self.action_toggle_pause)
        yield SystemCommand("Save checkpoint", "Write ckpt.pt now (Ctrl+S)", self.action_save)
        yield SystemCommand("Quit", "Save a checkpoint and quit (Ctrl+Q)",
                            lambda: self.begin_quit(0, "quit"))
        yield SystemCommand("Help", "Keys and panels (F1)", self.action_help)
        yield SystemCommand("Attention view", "Attention over the last prompt (F4)",
                            self.action_attention)
        yield SystemCommand("Model view", "Every layer's and head's attention (F7)",
                            self.action_model_view)
        yield SystemCommand("Surprise view", "The model's loss on each character (F8)",
                            self.action_surprise)
        yield SystemCommand("Embeddings view", "The characters' embeddings (F9)",
                            self.action_embeddings)
        yield SystemCommand("Compare with a run…", "Lay another run's curves over the chart "
                            "(F10)", self.action_compare)
        yield SystemCommand("Sampling parameters", "Temperature, top-k, top-p, beam width, "
                            "length, seed (F2)", prompt.action_edit_settings)
        yield SystemCommand("Switch sampling / beam search", "F3", prompt.action_toggle_mode)
        yield SystemCommand("Stop generation", "Escape", prompt.action_stop_generation)
        # Textual's own "Quit" would be listed next to ours (which says it saves first).
        yield from (command for command in super().get_system_commands(screen)
                    if command.title != "Quit")

    # -- quitting ----------------------------------------------------------------------------

    def begin_quit(self, exit_code: int, reason: str, ask: bool = True) -> None:
        """Stop training (which saves) and exit once it has; exit at once if not training."""
        if self._quit_code is not None:
            return  # already saving: the exit follows
        if exit_code == 0 and self._failure:
            exit_code = 1  # a failed run says so to whoever runs the app, also on a plain quit
        if self.session.stop(reason, exit_code):
            self._quit_code = exit_code
            self.notify("saving a checkpoint, then quitting…", title="quit")
            self.set_timer(QUIT_SAVE_TIMEOUT, lambda: self.exit(return_code=exit_code))
        elif self._unsaved_error and ask:
            self._confirm_quit(self._unsaved_error, exit_code)
        else:
            self.exit(return_code=exit_code)

    def _confirm_quit(self, problem: str, exit_code: int) -> None:
        def answer(quit_anyway: bool | None) -> None:
            if quit_anyway:
                self.exit(return_code=exit_code)

        self.push_screen(ConfirmQuitScreen(problem), answer)

    def farewell(self) -> list[str]:
        """What to print once the screen is gone: where the weights are, what to run next
        (as headless ``train`` does)."""
        return self.session.farewell(self._failure, self._result)

    # -- messages from the panels ------------------------------------------------------------

    @while_running
    def on_model_ready(self, message: messages.ModelReady) -> None:
        self.prompt.show_unavailable(None)
        self.prompt.refresh_next_chars()
        self.refresh_bindings()

    @while_running
    def on_model_unavailable(self, message: messages.ModelUnavailable) -> None:
        self.prompt.show_unavailable(message.reason)

    @while_running
    def on_engine_event(self, message: messages.EngineEvent) -> None:
        if isinstance(message.event, StateChanged):
            self.refresh_bindings()
            self.prompt.show_training(message.event.state in ("training", "evaluating"))
        elif isinstance(message.event, EvalDone):
            self.prompt.refresh_next_chars()

    @while_running
    def on_training_ended(self, message: messages.TrainingEnded) -> None:
        self.refresh_bindings()
        self._result = message.result
        if message.unsaved:
            self._unsaved_error = message.error
        failure = message.error or (message.result.reason or "training failed"
                                    if message.result and message.result.state == "failed"
                                    else None)
        if failure:
            self._failure = failure
            if self.live_model.ready:  # weights from before the failure still answer
                self.notify(f"training failed: {failure}; prompts use the last weights",
                            severity="error", timeout=10)
            else:
                self.prompt.show_unavailable(f"training failed: {failure} — nothing to "
                                             "prompt; Ctrl+Q quits")
        if self._quit_code is None:
            return
        code, self._quit_code = self._quit_code, None
        if message.unsaved and message.error:
            self._confirm_quit(message.error, code)
        else:
            self.exit(return_code=code)

    def on_view_text(self, message: messages.ViewText) -> None:
        self.view_texts[message.name] = message.text

    @while_running
    def on_compare_loaded(self, message: messages.CompareLoaded) -> None:
        if message.curves is None:
            self.notify(message.error or "cannot read that run", title="compare",
                        severity="error")
            return
        self.compare = [(message.label, message.curves)]
        self.show_compare(message.label, message.curves)
