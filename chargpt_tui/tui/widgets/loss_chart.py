"""A braille line chart of train and validation loss on one shared axis.

Braille cells hold 2×4 dots, so a 40×4 cell chart plots 80 columns × 16 rows of resolution —
readable on an 80×24 terminal. Each plotted column is the *mean* of the steps it covers (a max
would draw every noisy spike). Intensity never relies on colour alone: train is drawn with
dots, validation with its own colour and as bold dots, so 16-colour terminals stay readable.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterator, Sequence

from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

# Bit for the dot at (column 0/1, row 0-3) inside one braille cell (U+2800 + bits).
BRAILLE_DOTS = ((0x01, 0x08), (0x02, 0x10), (0x04, 0x20), (0x40, 0x80))
AXIS_WIDTH = 6


def bucket_means(points: Sequence[tuple[int, float]], first: int, last: int,
                 columns: int) -> list[float | None]:
    """Mean value of the points falling into each of ``columns`` equal step ranges."""
    span = max(1, last - first)
    sums = [0.0] * columns
    counts = [0] * columns
    for step, value in points:
        index = min(columns - 1, max(0, int((step - first) * columns / (span + 1))))
        sums[index] += value
        counts[index] += 1
    return [s / c if c else None for s, c in zip(sums, counts)]


def line_dots(points: Sequence[tuple[int, float]]) -> Iterator[tuple[int, int]]:
    """Dots of the polyline through ``points`` (x, y), joined so it reads as a line even where
    points are sparse (validation is measured only every eval interval)."""
    if len(points) == 1:
        yield points[0][0], round(points[0][1])
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        previous = round(y0)
        for x in range(x0, x1 + 1):
            y = round(y0 + (y1 - y0) * (x - x0) / max(1, x1 - x0))
            for dot_y in range(min(y, previous), max(y, previous) + 1):
                yield x, dot_y
            previous = y


class LossChart(Widget):
    """Train (every step) and val (every eval) losses against the step number."""

    train_points: reactive[tuple[tuple[int, float], ...]] = reactive(tuple, layout=False)
    val_points: reactive[tuple[tuple[int, float], ...]] = reactive(tuple, layout=False)

    def render(self) -> Text:
        width, height = self.size.width - AXIS_WIDTH, self.size.height - 1
        if width < 4 or height < 1:
            return Text("")
        train, val = self.train_points, self.val_points
        if not train and not val:
            return Text("loss curve appears after the first steps", style="dim")
        steps = [s for s, _ in train] + [s for s, _ in val]
        first, last = min(steps), max(steps)
        dot_columns, dot_rows = width * 2, height * 4
        series = [bucket_means(train, first, last, dot_columns),
                  bucket_means(val, first, last, dot_columns)]
        values = [v for column in series for v in column if v is not None]
        low, high = min(values), max(values)
        if high - low < 1e-6:
            low, high = low - 0.5, high + 0.5
        cells = [[0] * width for _ in range(height)]
        owner = [[-1] * width for _ in range(height)]  # which series coloured the cell last
        for index, column_values in enumerate(series):
            scale = (dot_rows - 1) / (high - low)
            points = [(x, (high - v) * scale) for x, v in enumerate(column_values)
                      if v is not None]
            for dot_x, dot_y in line_dots(points):
                cell_row, cell_col = dot_y // 4, dot_x // 2
                cells[cell_row][cell_col] |= BRAILLE_DOTS[dot_y % 4][dot_x % 2]
                owner[cell_row][cell_col] = index
        text = Text(no_wrap=True, overflow="crop")
        styles = ("cyan", "bold yellow")
        for row in range(height):
            label = f"{high:5.2f} " if row == 0 else f"{low:5.2f} " if row == height - 1 else ""
            text.append(label.rjust(AXIS_WIDTH), style="dim")
            for col in range(width):
                bits = cells[row][col]
                char = chr(0x2800 + bits) if bits else " "
                text.append(char, style=styles[owner[row][col]] if bits else "")
            text.append("\n")
        text.append(" " * AXIS_WIDTH)
        text.append("━ train", style="cyan")
        if train:
            text.append(f" {statistics.mean(v for _, v in train[-20:]):.3f}", style="cyan")
        text.append("   ━ val", style="bold yellow")
        if val:
            text.append(f" {val[-1][1]:.3f}", style="bold yellow")
        text.append(f"   steps {first}–{last}", style="dim")
        return text
