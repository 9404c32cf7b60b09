"""Edit the prompt's sampling parameters from the keyboard: Tab between fields, Enter applies.

The mode is picked from a list (Enter opens it, ↑↓ and Enter choose); the rest are typed.
"""

from __future__ import annotations

from dataclasses import replace

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label, Select, Static

from chargpt_tui.errors import UserError
from chargpt_tui.tui.prompt_settings import MODE_LABELS, PromptSettings

# (field, label, help shown as placeholder): the typed fields
FIELDS = (
    ("temperature", "temperature", "0 = greedy, 0.8 typical"),
    ("top_k", "top-k", "empty = off"),
    ("top_p", "top-p", "empty = off, e.g. 0.9"),
    ("beam_width", "beam width", "2 or more"),
    ("length", "length", "characters to generate"),
    ("seed", "seed", "empty = random"),
    ("no_repeat_ngram", "n-gram guard", "beam: 0 = off, e.g. 4"),
)
OPTIONAL = {"top_k", "top_p", "seed"}
FLOATS = {"temperature", "top_p"}


class SettingsScreen(ModalScreen[PromptSettings | None]):
    AUTO_FOCUS = "#field-mode"  # the app's own AUTO_FOCUS (the prompt) is not on this screen
    BINDINGS = [Binding("escape", "cancel", "cancel")]

    def __init__(self, settings: PromptSettings) -> None:
        super().__init__()
        self.settings = settings

    def compose(self) -> ComposeResult:
        with Vertical(id="settings-dialog"):
            yield Static("[b]Sampling parameters[/b]  [dim]Tab next · Enter apply · Esc cancel[/]")
            with Grid(id="settings-grid"):
                yield Label("mode")
                yield Select([(label, mode) for mode, label in MODE_LABELS.items()],
                             value=self.settings.mode, allow_blank=False, compact=True,
                             id="field-mode")
                for name, label, hint in FIELDS:
                    value = getattr(self.settings, name)
                    yield Label(label)
                    yield Input("" if value is None else str(value), placeholder=hint,
                                id=f"field-{name}")
            yield Static(id="settings-error")

    def parse(self) -> PromptSettings:
        values: dict[str, object] = {"mode": self.query_one("#field-mode", Select).value}
        for name, label, _ in FIELDS:
            raw = self.query_one(f"#field-{name}", Input).value.strip()
            if not raw and name in OPTIONAL:
                values[name] = None
            else:
                try:
                    values[name] = float(raw) if name in FLOATS else int(raw)
                except ValueError:
                    raise ValueError(f"{label}: {raw!r} is not a number") from None
        settings = replace(self.settings, **values)
        settings.params()  # validates (ConfigError is a UserError)
        return settings

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        try:
            settings = self.parse()
        except (ValueError, UserError) as error:
            self.query_one("#settings-error", Static).update(f"[red]{error}[/]")
            return
        self.dismiss(settings)

    def action_cancel(self) -> None:
        self.dismiss(None)
