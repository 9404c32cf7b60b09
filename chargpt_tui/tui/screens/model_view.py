"""F7: every layer × head at once, each a thumbnail of its attention pattern (bertviz's
"model view").

A thumbnail is the attention grid over the text's last few characters: a row per character
looking (top to bottom), a column per character looked at (left to right); only the lower-left
triangle can be filled (no looking ahead). Patterns to spot: a line just left of the diagonal
is a *previous-character* head; the diagonal itself, a head that looks at the character itself;
a bright column, a head that goes back to one particular character (a space, a newline, a
capital). ``↶`` is how far back the head looks on average. Enter opens the selected head in the
attention view (F4) over the whole text.
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.widget import Widget
from textual.widgets import Static

from chargpt_tui.explain import TextAttention, attention_over, mean_look_back, shade_char
from chargpt_tui.model import GPTLanguageModel
from chargpt_tui.tokenizer import CharTokenizer
from chargpt_tui.tui.formatting import visible_char
from chargpt_tui.tui.screens.attention import AttentionScreen
from chargpt_tui.tui.screens.explain_base import ExplainScreen, open_view
from chargpt_tui.tui.widgets.footer import Footer

THUMB_CHARS = 8  # a thumbnail shows the attention among the text's last 8 characters
LABEL_WIDTH = 11  # "L1 H2 ↶1.3" and a space


def thumbnail(grid: list[list[float]], chars: str, wide: bool) -> list[Text]:
    """One head's grid as lines of shade characters; ``wide`` draws each cell two characters
    wide, so the grid looks square."""
    lines = []
    for q, row in enumerate(grid):
        line = Text()
        for k in range(len(row)):
            cell = shade_char(row[k]) if k <= q else "·"
            line.append(cell * 2 if wide else cell, style="yellow" if k <= q else "dim")
        line.append(" " + visible_char(chars[q]), style="dim")
        lines.append(line)
    return lines


class HeadGrid(Widget):
    """All the thumbnails, a row of them per layer; the selected one's label is highlighted."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.result: TextAttention | None = None
        self.selected = (0, 0)

    def cell_width(self) -> tuple[int, bool]:
        """Each thumbnail's width, and whether its cells are two characters wide (if all the
        heads of a layer fit side by side that way)."""
        assert self.result is not None
        n = min(THUMB_CHARS, len(self.result.chars))
        wide = self.result.n_head * (2 * n + 3) <= max(1, self.size.width)
        return max(LABEL_WIDTH, (2 * n if wide else n) + 3), wide

    def rows_per_layer(self) -> int:
        assert self.result is not None
        return min(THUMB_CHARS, len(self.result.chars)) + 2  # the label and a blank line

    def render(self) -> Text:
        result = self.result
        if result is None:
            return Text("")
        width, wide = self.cell_width()
        n = min(THUMB_CHARS, len(result.chars))
        chars = result.chars[-n:]
        text = Text(no_wrap=True, overflow="crop")
        for layer in range(result.n_layer):
            blocks = []
            for head in range(result.n_head):
                full = result.maps[layer][head]
                label = Text(f"L{layer + 1} H{head + 1} ↶{mean_look_back(full):.1f}".ljust(width),
                             style="bold reverse" if (layer, head) == self.selected else "bold")
                grid = full[-n:, -n:].tolist()
                blocks.append([label, *thumbnail(grid, chars, wide)])
            for line_index in range(n + 1):
                for block in blocks:
                    piece = block[line_index].copy()
                    piece.truncate(width, pad=True)
                    text.append_text(piece)
                text.append("\n")
            text.append("\n")
        return text

    def get_content_height(self, container: object, viewport: object, width: int) -> int:
        if self.result is None:
            return 1
        return self.result.n_layer * self.rows_per_layer()


class ModelViewScreen(ExplainScreen[TextAttention]):
    TITLE = "all heads"
    BINDINGS = [
        Binding("left", "move(0, -1)", "head", key_display="←→"),
        Binding("right", "move(0, 1)", "next head", show=False),
        Binding("up", "move(-1, 0)", "layer", key_display="↑↓"),
        Binding("down", "move(1, 0)", "next layer", show=False),
        Binding("enter", "open", "open", tooltip="Open this head over the whole text"),
        Binding("f7", "close", "close", show=False),
    ]

    def compose(self) -> ComposeResult:
        yield Static(classes="view-title")
        with VerticalScroll(id="model-view-scroll"):
            yield HeadGrid(id="head-grid")
        yield Static("[dim]rows: the character looking · columns: the characters it looks at "
                     "(the text's last ones) · ↶ mean look-back[/]", id="model-view-legend")
        yield Footer(show_command_palette=False)

    def compute_view(self, model: GPTLanguageModel, tokenizer: CharTokenizer,
                     text: str) -> TextAttention:
        ids, _ = tokenizer.encode_lenient(text)
        return attention_over(model, tokenizer, ids or [0])

    def show(self, result: TextAttention) -> None:
        grid = self.query_one(HeadGrid)
        layer, head = grid.selected
        grid.selected = (min(layer, result.n_layer - 1), min(head, result.n_head - 1))
        grid.result = result
        grid.refresh(layout=True)

    def describe(self) -> str:
        if self.result is None:
            return self.text_name or ""
        layer, head = self.query_one(HeadGrid).selected
        return (f"{self.result.n_layer} layers × {self.result.n_head} heads · selected L"
                f"{layer + 1} H{head + 1} · {self.text_name}")

    def action_move(self, layers: int, heads: int) -> None:
        if self.result is None:
            return
        grid = self.query_one(HeadGrid)
        layer, head = grid.selected
        grid.selected = ((layer + layers) % self.result.n_layer,
                         (head + heads) % self.result.n_head)
        grid.refresh()
        rows = grid.rows_per_layer()
        self.query_one(VerticalScroll).scroll_to(y=grid.selected[0] * rows, animate=False)
        self.update_title()

    def action_open(self) -> None:
        if self.result is None:
            return
        layer, head = self.query_one(HeadGrid).selected
        # In place of this view, on the same text and weights as the thumbnails.
        open_view(self.app, AttentionScreen(self.context, layer=layer, head=head))
