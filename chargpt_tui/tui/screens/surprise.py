"""F8: surprise — the model's loss on each character of a text, and what it expected instead.

Each character is coloured by ``-ln p(char | everything before it)``: green where the model was
sure and right, red where it did no better than a uniform guess over the vocabulary. Select a
character (←/→) to see the model's top guesses for it. A trained model is typically sure inside
words and after a speaker's name, and lost at the first letter of a word or a name: that is
where the text carries information.
"""

from __future__ import annotations

import math

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widget import Widget
from textual.widgets import Static

from chargpt_tui.explain import SURPRISE_16, SURPRISE_256, Surprise, surprise, surprise_level
from chargpt_tui.model import GPTLanguageModel
from chargpt_tui.tokenizer import CharTokenizer
from chargpt_tui.tui.formatting import visible_char
from chargpt_tui.tui.screens.attention import few_colours
from chargpt_tui.tui.screens.explain_base import ExplainScreen
from chargpt_tui.tui.widgets.footer import Footer

GUESSES_SHOWN = 5
BAR_WIDTH = 6


def level_style(level: int, levels: int) -> str:
    """The style of a character at ``level`` of ``levels``: a background from the 256-colour
    ramp, or (3 levels, 16 colours) a green, yellow or red letter."""
    if levels == len(SURPRISE_16):
        return SURPRISE_16[level]
    return f"black on color({SURPRISE_256[level]})"


def surprise_legend(scores: Surprise, vocab_size: int, colours_16: bool) -> Text:
    """The colours as the text uses them, each labelled with the loss it starts at (nats), and
    the text's mean loss."""
    levels = len(SURPRISE_16) if colours_16 else len(SURPRISE_256)
    uniform = math.log(max(2, vocab_size))
    legend = Text()
    legend.append("loss ", style="bold")
    for level in range(levels):
        low = max(0.0, (level - 0.5) / (levels - 1) * uniform)  # where rounding enters it
        legend.append(f" {low:.1f}" + (" " if colours_16 else ""),
                      style=level_style(level, levels))
    legend.append(f" nats (≥ {uniform:.1f}: uniform guess) · mean "
                  f"{scores.mean_nats:.2f} nats = {scores.mean_nats / math.log(2):.2f} bits")
    return legend


def surprise_text(result: Surprise, vocab_size: int, cursor: int, width: int,
                  colours_16: bool) -> Text:
    """The text in lines of ``width``, each character coloured by its loss (background in 256
    colours; green/yellow/red letters in 16), the selected one reversed."""
    text = Text(no_wrap=True, overflow="crop")
    column = 0
    for position, (char, nats) in enumerate(zip(result.chars, result.nats)):
        levels = len(SURPRISE_16) if colours_16 else len(SURPRISE_256)
        if nats is None:
            style = "italic"  # the first character: nothing before it to predict it from
        else:
            style = level_style(surprise_level(nats, vocab_size, levels), levels)
        if position == cursor:
            style = "bold reverse"
        text.append(visible_char(char), style=style)
        column += 1
        if char == "\n" or column >= width:
            text.append("\n")
            column = 0
    return text


class SurpriseText(Widget):
    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.result: Surprise | None = None
        self.vocab_size = 2
        self.cursor = 0
        self.colours_16 = False

    def render(self) -> Text:
        if self.result is None:
            return Text("")
        return surprise_text(self.result, self.vocab_size, self.cursor,
                             max(1, self.size.width), self.colours_16)


class SurpriseScreen(ExplainScreen[tuple[Surprise, int]]):
    TITLE = "surprise"
    BINDINGS = [
        Binding("left", "cursor(-1)", "char", key_display="←→"),
        Binding("right", "cursor(1)", "next character", show=False),
        Binding("home", "cursor(-100000)", "first character", show=False),
        Binding("end", "cursor(100000)", "last character", show=False),
        Binding("f8", "close", "close", show=False),
    ]

    def compose(self) -> ComposeResult:
        yield Static(classes="view-title")
        yield SurpriseText(id="surprise-text")
        yield Static(id="surprise-detail")
        yield Static(id="surprise-legend")
        yield Footer(show_command_palette=False)

    def on_mount(self) -> None:
        self.query_one(SurpriseText).colours_16 = few_colours(self)
        super().on_mount()

    def compute_view(self, model: GPTLanguageModel, tokenizer: CharTokenizer,
                     text: str) -> tuple[Surprise, int]:
        ids, _ = tokenizer.encode_lenient(text)
        return surprise(model, tokenizer, ids or [0], top_k=GUESSES_SHOWN), tokenizer.vocab_size

    def show(self, result: tuple[Surprise, int]) -> None:
        scores, vocab_size = result
        view = self.query_one(SurpriseText)
        view.result, view.vocab_size = scores, vocab_size
        self.query_one("#surprise-legend", Static).update(
            surprise_legend(scores, vocab_size, view.colours_16))
        self.redraw()

    def describe(self) -> str:
        if self.result is None:
            return self.text_name or ""
        return f"{self.text_name} ({len(self.result[0].chars)} chars)"

    def redraw(self) -> None:
        if self.result is None:
            return
        scores, _ = self.result
        last = len(scores.chars) - 1
        cursor = last if self.cursor is None else max(0, min(last, self.cursor))
        view = self.query_one(SurpriseText)
        view.cursor = cursor
        view.refresh()
        nats = scores.nats[cursor]
        detail = Text()
        detail.append(visible_char(scores.chars[cursor]), style="bold")
        if nats is None:
            detail.append(f" (char {cursor + 1}): the first character has nothing before it "
                          "to be predicted from")
        else:
            detail.append(f" (char {cursor + 1}): {nats:.2f} nats = {nats / math.log(2):.1f} "
                          f"bits · p = {math.exp(-nats):.0%} · the model expected:\n")
            for char, p in scores.guesses[cursor]:
                bar = "█" * max(1, round(p * BAR_WIDTH))
                right = char == scores.chars[cursor]
                detail.append(f" {visible_char(char)} ", style="bold green" if right else "bold")
                detail.append(bar, style="green" if right else "cyan")
                detail.append(f" {p:.0%} ")
        self.query_one("#surprise-detail", Static).update(detail)

    def action_cursor(self, delta: int) -> None:
        if self.result is None:
            return
        last = len(self.result[0].chars) - 1
        current = last if self.cursor is None else self.cursor
        self.cursor = max(0, min(last, current + delta))
        self.redraw()
