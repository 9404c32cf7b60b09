"""The latest live sample from the training weights, streamed in character by character."""

from __future__ import annotations

from rich.text import Text
from textual.widget import Widget


class LiveSample(Widget):
    """Shows the tail of the current sample that fits the widget (newest text at the bottom)."""

    PLACEHOLDER = "a sample from the live weights appears at every evaluation"

    def __init__(self, *, placeholder: str = PLACEHOLDER, id: str | None = None) -> None:
        super().__init__(id=id)
        self.placeholder = placeholder
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
            return Text(self.placeholder, style="dim")
        header = f"step {self.step}{'' if self.done else ' …'} ▸ "
        width = max(1, self.size.width)
        # Keep the newest lines that fit (counting wrapped rows) and put the header in front,
        # so the step it came from stays visible however long the sample.
        budget, kept = max(1, self.size.height), []
        for line in reversed(self.body.split("\n")):
            rows = max(1, -(-(len(line) + len(header)) // width))
            if rows > budget and kept:
                break
            kept.append(line)
            budget -= rows
        text = Text()
        text.append(header, style="bold")
        text.append("\n".join(reversed(kept)))
        return text
