"""The prompt line: Enter submits, ↑/↓ recall earlier prompts (like a shell)."""

from __future__ import annotations

from textual.binding import Binding
from textual.widgets import Input


class PromptInput(Input):
    BINDINGS = [
        Binding("up", "history(-1)", "earlier prompt", show=False),
        Binding("down", "history(1)", "later prompt", show=False),
    ]

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.history: list[str] = []
        self._position = 0  # == len(history) means "the line being typed"
        self._draft = ""
        self._still = False  # the cursor holds still (a model is training)

    def hold_cursor_still(self, still: bool) -> None:
        """No blinking while a model trains: each blink redraws the prompt, ~20 ms of the UI
        thread on this 2-core VM (a third of the app's CPU use while training, nearly all of
        it while paused), and on a CPU every moment the UI runs stalls training's threads at
        their next barrier. (Blinking is switched on for a
        focused prompt only: Textual would start the timer of an unfocused one.)"""
        self._still = still
        self.cursor_blink = not still and self.has_focus

    def on_focus(self) -> None:
        self.cursor_blink = not self._still

    def remember(self, prompt: str) -> None:
        if prompt and (not self.history or self.history[-1] != prompt):
            self.history.append(prompt)
        self._position = len(self.history)
        self._draft = ""

    def action_history(self, direction: int) -> None:
        if not self.history:
            return
        if self._position == len(self.history):
            self._draft = self.value
        self._position = max(0, min(len(self.history), self._position + direction))
        self.value = (self.history[self._position] if self._position < len(self.history)
                      else self._draft)
        self.cursor_position = len(self.value)
