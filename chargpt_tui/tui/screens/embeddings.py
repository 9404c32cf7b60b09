"""F9: the characters' embeddings, projected to two dimensions (PCA) and drawn as themselves.

Each character's embedding is a vector of ``n_embd`` numbers the model learned; characters it
treats alike end up close. The plot shows the two directions along which the embeddings differ
most. At step 0 the points are random noise; as training goes on, vowels, capitals, digits and
punctuation tend to gather, because the model learns they can stand in the same places. Step
through the run's saved weights with [ and ] to watch it happen: each picture is oriented like
the one before it (no mirroring from step to step).
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widget import Widget
from textual.widgets import Static

from chargpt_tui.explain import CHAR_GROUPS, Projection, char_group, embedding_projection
from chargpt_tui.model import GPTLanguageModel
from chargpt_tui.tokenizer import CharTokenizer
from chargpt_tui.tui.formatting import visible_char
from chargpt_tui.tui.screens.explain_base import ExplainScreen
from chargpt_tui.tui.widgets.footer import Footer

# 16-colour safe: the groups stay apart on any terminal.
GROUP_STYLES = {"vowel": "bold red", "consonant": "cyan", "capital": "bold yellow",
                "digit": "magenta", "punctuation": "green", "whitespace": "bold blue"}


def scatter(points: list[tuple[float, float]], labels: str, width: int, height: int
            ) -> tuple[Text, int]:
    """A ``width`` × ``height`` character plot of ``points`` (y up), each drawn as its label;
    returns the plot and how many points found their cell and both neighbours taken."""
    cells: list[list[tuple[str, str] | None]] = [[None] * width for _ in range(height)]
    xs, ys = [x for x, _ in points], [y for _, y in points]
    x0, y0 = min(xs, default=0.0), min(ys, default=0.0)
    x_span, y_span = (max(xs, default=1.0) - x0) or 1.0, (max(ys, default=1.0) - y0) or 1.0
    hidden = 0
    for (x, y), label in zip(points, labels):
        column = round((x - x0) / x_span * (width - 1))
        row = height - 1 - round((y - y0) / y_span * (height - 1))
        for candidate in (column, column + 1, column - 1):
            if 0 <= candidate < width and cells[row][candidate] is None:
                cells[row][candidate] = (visible_char(label), GROUP_STYLES[char_group(label)])
                break
        else:
            hidden += 1
    text = Text(no_wrap=True, overflow="crop")
    for row_index, row_cells in enumerate(cells):
        for cell in row_cells:
            if cell is None:
                text.append(" ")
            else:
                text.append(cell[0], style=cell[1])
        if row_index < height - 1:
            text.append("\n")
    return text, hidden


class EmbeddingPlot(Widget):
    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.projection: Projection | None = None
        self.vocab = ""
        self.hidden = 0

    def render(self) -> Text:
        if self.projection is None:
            return Text("")
        points = [(float(x), float(y)) for x, y in self.projection.points.tolist()]
        plot, self.hidden = scatter(points, self.vocab, max(2, self.size.width),
                                    max(2, self.size.height))
        return plot


class EmbeddingsScreen(ExplainScreen[tuple[Projection, str]]):
    TITLE = "embeddings"
    NEEDS_TEXT = False
    # t is bound still (it says why it changes nothing here), just not listed in the footer.
    BINDINGS = [Binding("f9", "close", "close", show=False),
                Binding("t", "next_text", "text", show=False)]

    def compose(self) -> ComposeResult:
        yield Static(classes="view-title")
        yield EmbeddingPlot(id="embedding-plot")
        legend = Text()
        for group in CHAR_GROUPS:
            legend.append(f"{group} ", style=GROUP_STYLES[group])
        legend.append("· ⏎ newline ␣ space\nclose together: characters the model treats alike",
                      style="dim")
        yield Static(legend, id="embedding-legend")
        yield Footer(show_command_palette=False)

    def compute_view(self, model: GPTLanguageModel, tokenizer: CharTokenizer,
                     text: str) -> tuple[Projection, str]:
        shown = self.result  # the picture on screen: the new one keeps its orientation
        return embedding_projection(model, shown[0].points if shown else None), tokenizer.vocab

    def show(self, result: tuple[Projection, str]) -> None:
        plot = self.query_one(EmbeddingPlot)
        plot.projection, plot.vocab = result
        plot.refresh()

    def describe(self) -> str:
        if self.result is None:
            return ""
        first, second = self.result[0].explained
        return f"{len(self.result[1])} chars · variance shown: → {first:.0%}, ↑ {second:.0%}"
