"""One line per event that matters: evals, checkpoints (with path), warnings, errors."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import RichLog

LEVEL_STYLES = {"info": "", "good": "green", "warning": "yellow", "error": "bold red"}


class EventLog(RichLog):
    # Not focusable: keys must keep going to the prompt (a focused log swallowed typing).
    can_focus = False

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, max_lines=500, wrap=True, min_width=1, markup=False,
                         highlight=False)
        self.entries: list[str] = []  # what was logged, unwrapped (wrapping depends on width)

    def add(self, line: str, level: str = "info") -> None:
        prefix = {"warning": "warning: ", "error": "error: "}.get(level, "")
        self.entries.append(prefix + line)
        self.write(Text(prefix + line, style=LEVEL_STYLES.get(level, "")))
