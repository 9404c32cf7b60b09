"""Asked only when quitting could not save a checkpoint."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Static


class ConfirmQuitScreen(ModalScreen[bool]):
    BINDINGS = [
        Binding("y", "answer(True)", "quit anyway"),
        Binding("n,escape", "answer(False)", "keep running"),
    ]

    def __init__(self, problem: str) -> None:
        super().__init__()
        self.problem = problem

    def compose(self) -> ComposeResult:
        with Vertical(id="confirm-dialog"):
            yield Static(f"[b red]Could not save a checkpoint[/]\n{self.problem}\n\n"
                         "Quit anyway and lose the training since the last save?  "
                         "[b]y[/b] quit · [b]n[/b] keep running")

    def action_answer(self, quit_anyway: bool) -> None:
        self.dismiss(quit_anyway)
