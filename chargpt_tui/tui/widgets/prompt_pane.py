"""The prompt pane: a chat-style transcript, the next-character view and the prompt line.

Each prompt is answered by a thread worker (group ``generate``; a new prompt or Escape cancels
the old one) from a snapshot of the current weights; when following a run, the worker first
loads the run's checkpoint if the file is newer than those weights. While it runs, training is
parked (``ModelSource.hold_training``): on a small CPU the two would otherwise split the cores
and both crawl. Generated characters go into a per-generation queue that a 30 Hz timer drains;
the first ones are drawn at once (the worker nudges the pane), so the wait a user feels is the
model's, not the timer's.
"""

from __future__ import annotations

import queue
import time
from dataclasses import dataclass, field

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.reactive import reactive
from textual.timer import Timer
from textual.widgets import Input, Static
from textual.worker import get_current_worker

from chargpt_tui.errors import UserError, describe
from chargpt_tui.sampling import (
    BeamText,
    next_char_probabilities,
    prepare_prompt,
    stream_beam_text,
    stream_text,
)
from chargpt_tui.tui import messages
from chargpt_tui.tui.live_model import ModelSource
from chargpt_tui.tui.prompt_settings import PromptSettings
from chargpt_tui.tui.widgets.next_chars import NextChars
from chargpt_tui.tui.widgets.prompt_input import PromptInput
from chargpt_tui.tui.widgets.transcript import Transcript, TranscriptEntry

DRAIN_INTERVAL = 1 / 30
PEEK_DEBOUNCE = 0.15  # seconds of no typing before the next-character view updates
NEXT_CHAR_COUNT = 8


@dataclass
class Generation:
    """UI-side bookkeeping of one answer; the worker only ever sees ``chunks``."""

    id: int
    entry: TranscriptEntry
    chunks: queue.SimpleQueue[tuple[str, str]] = field(default_factory=queue.SimpleQueue)
    step: int | None = None
    submitted: float = 0.0  # time.monotonic() of the Enter that asked for it
    first_char: float | None = None  # seconds from Enter until its first character was drawn


class PromptPane(Vertical):
    BINDINGS = [
        # Not in the footer: the answer being generated says "Esc stops" itself, and showing
        # the key only while it applies redrew the footer twice a prompt (tens of ms each).
        Binding("escape", "stop_generation", "stop", show=False,
                tooltip="Stop the answer being generated"),
        Binding("f2", "edit_settings", "params", tooltip="Edit sampling parameters"),
        Binding("f3", "toggle_mode", "mode", tooltip="Switch sampling and beam search"),
    ]

    settings: reactive[PromptSettings] = reactive(PromptSettings)

    def __init__(self, source: ModelSource, *, show_timing: bool = True,
                 id: str | None = None) -> None:
        super().__init__(id=id)
        self.source = source
        self.show_timing = show_timing
        self._generations: dict[int, Generation] = {}
        self._next_id = 0
        self._peek_timer: Timer | None = None
        self.unavailable: str | None = None  # why there is no model to prompt, when there isn't

    def compose(self) -> ComposeResult:
        yield Transcript(id="transcript")
        yield NextChars(id="next-chars")
        yield Static(id="settings-line")
        yield PromptInput(id="prompt-input", placeholder="prompt · Enter generates · ↑↓ history")

    def on_mount(self) -> None:
        self.border_title = "prompt"
        # Ticks only while answers stream: an idle tick still wakes the UI 30 times a second.
        self._drain_timer = self.set_interval(DRAIN_INTERVAL, self._drain, pause=True)

    def watch_settings(self, settings: PromptSettings) -> None:
        self.query_one("#settings-line", Static).update(
            f"[dim]{settings.describe()} · F2 edit · F3 mode[/]")

    # -- actions ------------------------------------------------------------------------------

    @property
    def generating(self) -> bool:
        """An answer is being generated (or its worker has not reported its end yet)."""
        return bool(self._generations)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "stop_generation":  # Escape passes on when there is nothing to stop
            return self.generating
        return True

    def action_stop_generation(self) -> None:
        self.workers.cancel_group(self, "generate")

    def action_toggle_mode(self) -> None:
        self.settings = self.settings.toggled()

    def action_edit_settings(self) -> None:
        from chargpt_tui.tui.screens.settings import SettingsScreen

        def apply(settings: PromptSettings | None) -> None:
            if settings is not None:
                self.settings = settings

        self.app.push_screen(SettingsScreen(self.settings), apply)

    def show_training(self, training: bool) -> None:
        """A steady cursor while a model trains (see ``PromptInput.hold_cursor_still``)."""
        self.query_one(PromptInput).hold_cursor_still(training)

    def show_unavailable(self, reason: str | None) -> None:
        """Say under the prompt why it cannot be answered yet (None: it can)."""
        self.unavailable = reason
        self.border_subtitle = reason or ""

    def refresh_next_chars(self) -> None:
        """New weights (model ready, or a new evaluation): update what the model expects."""
        self._peek(self.query_one(PromptInput).value)

    # -- prompts ------------------------------------------------------------------------------

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        prompt_input = self.query_one(PromptInput)
        text = event.value
        prompt_input.remember(text)
        prompt_input.value = ""
        try:
            self.settings.params()
        except UserError as error:
            self.notify(str(error), title="sampling parameters", severity="error")
            return
        self._next_id += 1
        entry = TranscriptEntry(text, self.settings.describe(), show_timing=self.show_timing)
        generation = Generation(self._next_id, entry, submitted=time.monotonic())
        self._generations[generation.id] = generation
        self._drain_timer.resume()
        self.query_one(Transcript).add_entry(entry)
        self._generate(generation.id, text, self.settings, generation.chunks)

    def on_input_changed(self, event: Input.Changed) -> None:
        event.stop()
        if self._peek_timer is not None:
            self._peek_timer.stop()
        value = event.value
        self._peek_timer = self.set_timer(PEEK_DEBOUNCE, lambda: self._peek(value))

    @work(thread=True, exclusive=True, group="generate", exit_on_error=False,
          description="answering a prompt")
    def _generate(self, generation_id: int, text: str, settings: PromptSettings,
                  chunks: queue.SimpleQueue[tuple[str, str]]) -> None:
        try:
            self._answer(generation_id, text, settings, chunks)
        except Exception as error:  # noqa: BLE001 - any failure must end the answer, not hang it
            self.post_message(messages.GenerationEnded(
                generation_id, 0, 0.0, stopped=True, error=f"generation failed: {describe(error)}"))

    def _answer(self, generation_id: int, text: str, settings: PromptSettings,
                chunks: queue.SimpleQueue[tuple[str, str]]) -> None:
        worker = get_current_worker()
        params = settings.params()
        produced, beams = 0, None
        nudged = False

        def put(kind: str, text: str) -> None:
            nonlocal nudged
            chunks.put((kind, text))
            if not nudged:  # the first characters: ask the pane to draw them now
                self.post_message(messages.AnswerStreaming(generation_id))
                nudged = True

        # Following a run: its newest checkpoint, loaded here if the file is newer than ours.
        refresh = self.source.refresh()
        if refresh.loaded is not None:
            self.post_message(messages.ModelReady(refresh.loaded, training=False))
        # Park training first, then copy its weights: the copy then does not compete with a
        # running step for the cores, and the answer comes from the step training stopped at.
        with self.source.hold_training():
            snapshot = self.source.snapshot()
            if snapshot is None:
                self.post_message(messages.GenerationEnded(
                    generation_id, 0, 0.0, stopped=True,
                    error=refresh.problem or self.unavailable or "no model yet — wait a moment "
                                                                 "until training has started"))
                return
            model, tokenizer = snapshot.model, snapshot.tokenizer
            prompt = prepare_prompt(tokenizer, text, model.config.block_size)
            warnings = prompt.warnings()
            if refresh.problem is not None:
                warnings.insert(0, f"the run's newest checkpoint could not be loaded "
                                   f"({refresh.problem}): answered from step {snapshot.step}")
            self.post_message(messages.GenerationStarted(generation_id, snapshot.step, warnings))
            started = time.perf_counter()
            if params.beam_width > 1:
                last: BeamText | None = None
                for last in stream_beam_text(model, tokenizer, prompt, params):
                    if worker.is_cancelled:
                        break
                    put("stable", last.stable)
                    put("tentative", last.tentative)
                if last is not None:  # decoded once, at the end: where the search stopped
                    beams = last.state.result(tokenizer)
                    produced = beams.chars
            else:
                for char in stream_text(model, tokenizer, prompt, params):
                    if worker.is_cancelled:
                        break
                    put("text", char)
                    produced += 1
            seconds = time.perf_counter() - started
        self.post_message(messages.GenerationEnded(generation_id, produced, seconds,
                                                   stopped=worker.is_cancelled, beams=beams))

    @work(thread=True, exclusive=True, group="peek", exit_on_error=False,
          description="next-character view")
    def _peek(self, text: str) -> None:
        with self.source.hold_training():  # parked first, then copied: as for an answer
            snapshot = self.source.snapshot()
            if snapshot is None:
                return
            try:
                candidates = next_char_probabilities(snapshot.model, snapshot.tokenizer, text,
                                                     NEXT_CHAR_COUNT)
            except Exception as error:  # noqa: BLE001 - the view empties; the app carries on
                self.post_message(messages.NextCharsComputed(text, [], snapshot.step,
                                                             error=describe(error)))
                return
        self.post_message(messages.NextCharsComputed(text, candidates, snapshot.step))

    # -- messages from the workers (UI thread) ------------------------------------------------

    def on_next_chars_computed(self, message: messages.NextCharsComputed) -> None:
        message.stop()
        if message.error:
            self.notify(f"next-character view failed: {message.error}", title="prompt",
                        severity="error")
        view = self.query_one(NextChars)
        view.candidates = tuple(message.candidates)
        view.step = message.step

    def on_generation_started(self, message: messages.GenerationStarted) -> None:
        message.stop()
        generation = self._generations.get(message.generation_id)
        if generation is None:
            return
        generation.step = message.step
        generation.entry.warnings = message.warnings
        generation.entry.set_status(f"step {message.step} snapshot · generating… (Esc stops)")
        for warning in message.warnings:
            self.notify(warning, title="prompt", severity="warning")

    def on_answer_streaming(self, message: messages.AnswerStreaming) -> None:
        """The first characters of an answer are queued: draw them now, not at the next tick."""
        message.stop()
        generation = self._generations.get(message.generation_id)
        if generation is not None:
            self._show_new_text(generation)

    def on_generation_ended(self, message: messages.GenerationEnded) -> None:
        message.stop()
        generation = self._generations.pop(message.generation_id, None)
        if not self._generations:
            self._drain_timer.pause()
        if generation is None:
            return
        self._drain_one(generation)
        entry = generation.entry
        if message.error:
            entry.set_status(message.error)
            return
        if message.beams is not None:
            entry.answer, entry.tentative = message.beams.texts[0], ""
            entry.beams = message.beams
        parts = [f"step {generation.step} snapshot", entry.settings, f"{message.chars} chars"]
        if self.show_timing and message.seconds > 0:
            parts.append(f"{message.chars / message.seconds:,.0f} chars/s")
        if self.show_timing and generation.first_char is not None:
            parts.append(f"first char {1000 * generation.first_char:.0f} ms")
        if message.stopped:
            parts.append("stopped")
        entry.set_status(" · ".join(parts))
        self.query_one(Transcript).follow(entry)
        self.post_message(messages.ViewText("last prompt", entry.prompt + entry.answer))

    def _drain(self) -> None:
        for generation in list(self._generations.values()):
            self._show_new_text(generation)

    def _show_new_text(self, generation: Generation) -> None:
        """Draw what the worker has queued and keep the answer in view."""
        if self._drain_one(generation):
            self.query_one(Transcript).follow(generation.entry)

    def _drain_one(self, generation: Generation) -> bool:
        entry, changed = generation.entry, False
        while True:
            try:
                kind, text = generation.chunks.get_nowait()
            except queue.Empty:
                break
            changed = True
            if kind == "tentative":
                entry.tentative = text
            else:
                entry.answer += text
        if changed:
            entry.refresh_text()
            if generation.first_char is None and (entry.answer or entry.tentative):
                generation.first_char = time.monotonic() - generation.submitted
        return changed
