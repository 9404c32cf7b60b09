"""Live samples from the training weights: one per evaluation, each under its step.

Every sample is kept (the oldest beyond ``MAX_SAMPLES`` go), so a user can scroll back and watch
the text turn from noise into words. The newest streams in character by character; only that
entry is re-wrapped as it grows. Replaying the lecture, each sample is headed by its rung, and
each finished rung adds the 200 characters it was judged by: the text improves rung by rung.
"""

from __future__ import annotations

from collections import deque

from rich.text import Text
from textual.strip import Strip

from chargpt_tui.tui import messages
from chargpt_tui.tui.widgets.wrapped_log import WrappedLog

MAX_SAMPLES = 200  # ~160 characters each: a few dozen kB however long the run


class LiveSample(WrappedLog):
    PLACEHOLDER = "a sample from the live weights appears at every evaluation"

    def __init__(self, *, placeholder: str = PLACEHOLDER, id: str | None = None) -> None:
        super().__init__(max_entries=MAX_SAMPLES, id=id)
        self.placeholder = placeholder
        self.step: int | None = None  # of the newest sample
        self.body = ""  # the newest sample's text so far
        self.done = False
        self.label = ""  # where the samples come from: the lecture's rung in training, if any
        self._steps: deque[int] = deque(maxlen=MAX_SAMPLES)  # of each kept sample

    def begin_section(self, label: str) -> None:
        """Samples from here on come from ``label`` (the lecture's next rung); its steps count
        from 0 again, so its first sample starts an entry of its own whatever its step."""
        self.label, self.step = label, None

    def add_whole(self, step: int, heading: str, body: str) -> None:
        """A finished text under its own heading (e.g. a finished rung's sample)."""
        self._steps.append(step)
        text = Text()
        text.append(f"{heading} ▸ ", style="bold")
        text.append(body)
        self.append(text)
        self.step = None  # the next live sample starts an entry of its own

    def start(self, step: int) -> None:
        self.step, self.body, self.done = step, "", False
        self._steps.append(step)
        self.append(self._entry())

    def extend(self, text: str, done: bool) -> None:
        self.body += text
        self.done = done
        self.replace_last(self._entry())
        if done and self.body:
            self.post_message(messages.ViewText("live sample", self.body))

    @property
    def history(self) -> list[tuple[int, str]]:
        """(step, text) of every sample kept, oldest first."""
        return [(step, text.plain.split(" ▸ ", 1)[1])
                for step, text in zip(self._steps, self.texts)]

    def _entry(self) -> Text:
        text = Text()
        where = f"{self.label} · step {self.step}" if self.label else f"step {self.step}"
        text.append(f"{where}{'' if self.done else ' …'} ▸ ", style="bold")
        text.append(self.body)
        return text

    def render_line(self, y: int) -> Strip:
        if self.texts:
            return super().render_line(y)
        width = self.scrollable_content_region.width
        console = self.app.console
        lines = Text(self.placeholder, style="dim").wrap(console, max(1, width))
        if y >= len(lines):
            return Strip.blank(width, self.rich_style)
        return Strip(list(lines[y].render(console)), lines[y].cell_len).extend_cell_length(
            width, self.rich_style).apply_style(self.rich_style)
