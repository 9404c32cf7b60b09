"""The latest live sample from the training weights, streamed in character by character."""

from __future__ import annotations

from rich.text import Text
from textual.widget import Widget


class LiveSample(Widget):
    """Shows the tail of the current sample that fits the widget (newest text at the bottom)."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.step: int | None = None
        self.body = ""
        self.done = False

    def start(self, step: int) -> None:
        self.step, self.body, self.done = step, "", False
        self.refresh()

    def extend(self, text: str, done: bool) -> None:
        self.body += text
        self.done = done
        self.refresh()

    def render(self) -> Text:
        if self.step is None:
            return Text("a sample from the live weights appears at every evaluation",
                        style="dim")
        header = Text(f"sample @ step {self.step}{'' if self.done else ' …'}: ", style="dim")
        width = max(1, self.size.width)
        lines = (header.plain + self.body).split("\n")
        # Keep only the lines that fit, counting wrapped lines; the newest text stays visible.
        budget, kept = max(1, self.size.height), []
        for line in reversed(lines):
            rows = max(1, -(-len(line) // width))
            if budget - rows < 0 and kept:
                break
            kept.append(line)
            budget -= rows
        shown = "\n".join(reversed(kept))
        text = Text(shown)
        if shown.startswith(header.plain):
            text.stylize("dim", 0, len(header.plain))
        return text
