"""One line per event that matters: evals, checkpoints (with path), warnings, errors."""

from __future__ import annotations

from collections import deque

from rich.text import Text
from textual.widgets import RichLog

MAX_LINES = 500
LEVEL_STYLES = {"info": "", "good": "green", "warning": "yellow", "error": "bold red"}


class EventLog(RichLog):
    # Not focusable: keys must keep going to the prompt (a focused log swallowed typing).
    can_focus = False

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, max_lines=MAX_LINES, wrap=True, min_width=1, markup=False,
                         highlight=False)
        # What was logged, unwrapped (wrapping depends on width); as bounded as the view.
        self.entries: deque[str] = deque(maxlen=MAX_LINES)

    def add(self, line: str, level: str = "info") -> None:
        prefix = {"warning": "warning: ", "error": "error: "}.get(level, "")
        self.entries.append(prefix + line)
        self.write(Text(prefix + line, style=LEVEL_STYLES.get(level, "")))
