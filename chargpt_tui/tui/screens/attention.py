"""F4: where each character of the last prompt looks, per layer and head.

Row = the character doing the looking (query), column = the character looked at (key); only
earlier characters can be looked at (causal mask), so the map is lower-triangular. Each row
sums to 1. Shades, not colours, carry the weight, so the map reads in 16 colours too.
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import Footer, Static

from chargpt_tui.tui.formatting import visible_char
from chargpt_tui.tui.messages import AttentionComputed

# (lower bound of the weight, shade)
SHADES = ((0.5, "█"), (0.25, "▓"), (0.1, "▒"), (0.03, "░"), (0.0, " "))


def shade(weight: float) -> str:
    return next(char for bound, char in SHADES if weight >= bound)


class AttentionMap(Widget):
    """The heatmap of one head; shows the last characters that fit the widget."""

    def __init__(self, attention: AttentionComputed, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.attention = attention
        self.layer_index = 0
        self.head_index = 0

    def render(self) -> Text:
        chars = self.attention.chars
        grid = self.attention.maps[self.layer_index][self.head_index]
        label_width = 2
        fit = max(1, min(len(chars), (self.size.width - label_width) // 2,
                         self.size.height - 1))
        first = len(chars) - fit
        text = Text(no_wrap=True, overflow="crop")
        text.append(" " * label_width)
        for char in chars[first:]:
            text.append(visible_char(char) + " ", style="bold")
        for row in range(first, len(chars)):
            text.append("\n")
            text.append(visible_char(chars[row]) + " ", style="bold")
            for col in range(first, len(chars)):
                cell = shade(grid[row][col]) if col <= row else "·"
                text.append(cell * 2 if cell != "·" else "· ",
                            style="yellow" if col <= row else "dim")
        return text


class AttentionScreen(Screen[None]):
    BINDINGS = [
        Binding("left", "head(-1)", "head ←"),
        Binding("right", "head(1)", "head →"),
        Binding("up,left_square_bracket", "layer(-1)", "layer ↑"),
        Binding("down,right_square_bracket", "layer(1)", "layer ↓"),
        Binding("escape,f4", "close", "close"),
    ]

    def __init__(self, attention: AttentionComputed | None) -> None:
        super().__init__()
        self.attention = attention

    def compose(self) -> ComposeResult:
        yield Static(id="attention-title")
        if self.attention is not None:
            yield AttentionMap(self.attention, id="attention-map")
        yield Static("[dim]rows: the character looking · columns: the characters it looks at · "
                     "shade = weight (█ ≥ .5 ▓ ≥ .25 ▒ ≥ .1 ░ ≥ .03)[/]", id="attention-legend")
        yield Footer()

    def on_mount(self) -> None:
        self._update_title()

    def _update_title(self) -> None:
        title = self.query_one("#attention-title", Static)
        if self.attention is None:
            title.update("[b]attention[/b] · no prompt yet — type one and press Enter, "
                         "then come back with F4")
            return
        view = self.query_one(AttentionMap)
        layers = len(self.attention.maps)
        heads = len(self.attention.maps[0])
        title.update(f"[b]attention[/b] · layer {view.layer_index + 1}/{layers} · head "
                     f"{view.head_index + 1}/{heads} · step {self.attention.step} snapshot · "
                     f"{len(self.attention.chars)} chars")

    def _move(self, layer: int = 0, head: int = 0) -> None:
        if self.attention is None:
            return
        view = self.query_one(AttentionMap)
        view.layer_index = (view.layer_index + layer) % len(self.attention.maps)
        view.head_index = (view.head_index + head) % len(self.attention.maps[0])
        view.refresh()
        self._update_title()

    def action_head(self, delta: int) -> None:
        self._move(head=delta)

    def action_layer(self, delta: int) -> None:
        self._move(layer=delta)

    def action_close(self) -> None:
        self.dismiss(None)
