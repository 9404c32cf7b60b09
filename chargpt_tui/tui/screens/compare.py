"""Asks for a run folder whose loss curves the chart lays over this run's (F10)."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Static


class CompareScreen(ModalScreen[str | None]):
    """Dismisses with the folder typed ("" removes the comparison), or None on Escape."""

    AUTO_FOCUS = "#compare-folder"
    BINDINGS = [Binding("escape", "cancel", "cancel")]

    def __init__(self, current: str = "") -> None:
        super().__init__()
        self.current = current

    def compose(self) -> ComposeResult:
        with Vertical(id="compare-dialog"):
            yield Static("[b]Compare with a run[/b]\nIts folder (holding metrics.jsonl); "
                         "empty removes the comparison. Enter applies, Escape cancels.")
            yield Input(self.current, placeholder="runs/…", id="compare-folder")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.dismiss(event.value.strip())

    def action_cancel(self) -> None:
        self.dismiss(None)
