"""One entry per event that matters: evals, checkpoints (with path), warnings, errors."""

from __future__ import annotations

from rich.text import Text

from chargpt_tui.tui.widgets.wrapped_log import WrappedLog

MAX_LINES = 500
LEVEL_STYLES = {"info": "", "good": "green", "warning": "yellow", "error": "bold red"}


class EventLog(WrappedLog):
    """Keeps each entry whole and re-wraps it on resize; warnings also pop up as a
    notification (a setup warning scrolled away in a 2-row log was never read)."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(max_entries=MAX_LINES, id=id)

    @property
    def entries(self) -> list[str]:
        """What was logged, unwrapped."""
        return [text.plain for text in self.texts]

    def add(self, line: str, level: str = "info") -> None:
        prefix = {"warning": "warning: ", "error": "error: "}.get(level, "")
        self.append(Text(prefix + line, style=LEVEL_STYLES.get(level, "")))
        if level == "warning":
            self.notify(line, title="warning", severity="warning", timeout=8)
