"""F4: attention over the text — where the selected character looks, head by head.

Move the cursor along the text (←/→): every character up to it is shaded by how much the
selected one attends to it, in this layer and head (↑/↓; the last choice is the mean of the
layer's heads). Characters after it stay dim: a GPT never looks ahead. The weights of a row sum
to 1, so the shading shows how a character spends its attention budget on its past.

256 colours: a background from dark to bright yellow. 16 colours (or ``s``): a row of shade
characters ░▒▓█ under each line of text.
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widget import Widget
from textual.widgets import Static

from chargpt_tui.explain import (
    SHADE_256,
    SHADE_CHARS,
    TextAttention,
    attention_over,
    mean_look_back,
    shade_bounds,
    shade_char,
    shade_level,
)
from chargpt_tui.model import GPTLanguageModel
from chargpt_tui.tokenizer import CharTokenizer
from chargpt_tui.tui.formatting import visible_char
from chargpt_tui.tui.screens.explain_base import ExplainScreen, ViewContext
from chargpt_tui.tui.widgets.footer import Footer

TOP_SHOWN = 5  # the most-attended characters listed under the text
# Characters the selected one cannot look at, in styles that stay legible (a dim style all but
# vanished on some terminals): after it (not seen yet), and before the model's context (a text
# longer than ``block_size``, e.g. a prompt whose answer ran past it: kept in view, in cyan like
# prompts in the transcript).
NOT_SEEN_STYLE = "italic"
BEFORE_STYLE = "italic cyan"


def few_colours(widget: Widget) -> bool:
    """The terminal shows 16 colours or fewer: draw shade characters, not colour ramps."""
    return widget.app.console.color_system in (None, "standard", "windows")


def level_style(level: int) -> str:
    """A shade level as a background from the 256-colour ramp, with a readable text colour."""
    fg = "black" if level > len(SHADE_256) // 2 else "white"
    return f"{fg} on color({SHADE_256[level]})"


def shade_legend(shade_rows: bool, before: bool) -> Text:
    """The legend in the styles the text is drawn with: the ramp of shades (the colours, or the
    shade characters in yellow), then what the unshaded characters mean."""
    text = Text()
    text.append("weight ", style="bold")
    if shade_rows:
        for char, bound in zip(SHADE_CHARS[1:], shade_bounds(len(SHADE_CHARS))):
            text.append(char, style="yellow")
            text.append(f" {bound:.2f} ".replace("0.", "."))
    else:
        for level, bound in enumerate(shade_bounds(len(SHADE_256)), start=1):
            text.append(f" {bound:.2f}".replace("0.", "."), style=level_style(level))
    text.append(" (log)  ")
    text.append("abc", style=NOT_SEEN_STYLE)
    text.append(" not seen yet")
    if before:
        text.append("  ")
        text.append("abc", style=BEFORE_STYLE)
        text.append(" out of context")
    return text


def attention_text(chars: str, row: list[float], cursor: int, width: int,
                   shade_rows: bool, before: str = "") -> Text:
    """``chars`` laid out in lines of ``width``, each character up to ``cursor`` shaded by its
    weight in ``row``; ``shade_rows`` draws a line of shade characters under each line of text
    instead of colouring it. ``before`` (the text before the model's context) comes first,
    unshaded: the model cannot look at it."""
    text = Text(no_wrap=True, overflow="crop")
    line: list[tuple[str, int]] = []  # (shown char, position in chars; < 0: in before)

    def flush(last: bool) -> None:
        for shown, position in line:
            if position == cursor:
                style = "bold reverse"
            elif position < 0:
                style = BEFORE_STYLE
            elif position > cursor:
                style = NOT_SEEN_STYLE
            elif not shade_rows:
                style = level_style(shade_level(row[position], len(SHADE_256)))
            else:
                style = ""
            text.append(shown, style=style)
        if shade_rows:
            text.append("\n")
            for _, position in line:
                text.append(shade_char(row[position]) if 0 <= position <= cursor else " ",
                            style="yellow")
        if not last:
            text.append("\n")

    for position, char in enumerate(before + chars, start=-len(before)):
        line.append((visible_char(char), position))
        if char == "\n" or len(line) >= width:
            flush(last=False)
            line = []
    flush(last=True)
    return text


class AttentionText(Widget):
    """The text, shaded by the selected character's attention."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.chars = ""  # what the model looks at: its context
        self.before = ""  # the text before the context
        self.row: list[float] = []
        self.cursor = 0
        self.shade_rows = False

    def render(self) -> Text:
        if not self.chars:
            return Text("")
        return attention_text(self.chars, self.row, self.cursor, max(1, self.size.width),
                              self.shade_rows, self.before)


class AttentionScreen(ExplainScreen[TextAttention]):
    TITLE = "attention"
    BINDINGS = [
        Binding("left", "cursor(-1)", "char", key_display="←→",
                tooltip="Select the character whose attention is shown"),
        Binding("right", "cursor(1)", "next character", show=False),
        Binding("home", "cursor(-100000)", "first character", show=False),
        Binding("end", "cursor(100000)", "last character", show=False),
        Binding("up", "head(-1)", "head", key_display="↑↓",
                tooltip="Another head; after the last: the mean of the layer's heads"),
        Binding("down", "head(1)", "next head", show=False),
        Binding("pageup", "layer(-1)", "layer", key_display="PgUp/Dn"),
        Binding("pagedown", "layer(1)", "next layer", show=False),
        Binding("s", "toggle_shades", "shade characters", show=False,
                tooltip="Shade characters under the text instead of colours"),
        Binding("f4", "close", "close", show=False),
    ]

    def __init__(self, context: ViewContext, text_name: str | None = None, layer: int = 0,
                 head: int | None = 0) -> None:
        super().__init__(context, text_name)
        self.layer_index = layer
        self.head_index = head  # None: the mean of the layer's heads

    def compose(self) -> ComposeResult:
        yield Static(classes="view-title")
        yield AttentionText(id="attention-text")
        yield Static(id="attention-detail")
        yield Static(id="attention-legend")
        yield Footer(show_command_palette=False)

    def on_mount(self) -> None:
        self.query_one(AttentionText).shade_rows = few_colours(self)
        super().on_mount()

    def compute_view(self, model: GPTLanguageModel, tokenizer: CharTokenizer,
                     text: str) -> TextAttention:
        ids, _ = tokenizer.encode_lenient(text)
        return attention_over(model, tokenizer, ids or [0])

    def show(self, result: TextAttention) -> None:
        self.layer_index = min(self.layer_index, result.n_layer - 1)
        if self.head_index is not None and self.head_index >= result.n_head:
            self.head_index = None
        self.redraw()

    def describe(self) -> str:
        if self.result is None:
            return self.text_name or ""
        head = ("mean of heads" if self.head_index is None
                else f"head {self.head_index + 1}/{self.result.n_head}")
        return (f"layer {self.layer_index + 1}/{self.result.n_layer} · {head} · "
                f"{self.text_name}")

    def redraw(self) -> None:
        result = self.result
        if result is None:
            return
        last = len(result.chars) - 1
        cursor = last if self.cursor is None else max(0, min(last, self.cursor))
        row = result.row(self.layer_index, self.head_index, cursor)
        view = self.query_one(AttentionText)
        view.chars, view.before, view.row, view.cursor = result.chars, result.before, row, cursor
        view.refresh()
        ranked = sorted(range(len(row)), key=lambda k: -row[k])[:TOP_SHOWN]
        looks = "  ".join(f"{visible_char(result.chars[k])}{k - cursor:+d} {row[k]:.2f}"
                          for k in ranked)
        grid = (result.maps[self.layer_index].mean(0) if self.head_index is None
                else result.maps[self.layer_index][self.head_index])
        where = f"char {cursor + 1}/{len(result.chars)}"
        context = (f" · context: last {len(result.chars)} of "
                   f"{len(result.before) + len(result.chars)} chars" if result.before else "")
        self.query_one("#attention-detail", Static).update(
            f"[b]{visible_char(result.chars[cursor])}[/b] ({where}) looks at  {looks}\n"
            f"[dim]on average this head looks {mean_look_back(grid):.1f} chars back{context}[/]")
        self.query_one("#attention-legend", Static).update(
            shade_legend(view.shade_rows, bool(result.before)))
        self.update_title()

    def action_cursor(self, delta: int) -> None:
        if self.result is None:
            return
        last = len(self.result.chars) - 1
        current = last if self.cursor is None else self.cursor
        self.cursor = max(0, min(last, current + delta))
        self.redraw()

    def action_head(self, delta: int) -> None:
        if self.result is None:
            return
        choices = [*range(self.result.n_head), None]
        self.head_index = choices[(choices.index(self.head_index) + delta) % len(choices)]
        self.redraw()

    def action_layer(self, delta: int) -> None:
        if self.result is None:
            return
        self.layer_index = (self.layer_index + delta) % self.result.n_layer
        self.redraw()

    def action_toggle_shades(self) -> None:
        view = self.query_one(AttentionText)
        view.shade_rows = not view.shade_rows
        self.redraw()  # the legend too
