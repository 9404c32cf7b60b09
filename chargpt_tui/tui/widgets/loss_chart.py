"""A braille line chart of train and validation loss against the step, with labelled axes.

Braille cells hold 2×4 dots, so a 70×4 cell chart plots 140 columns × 16 rows. Each plotted
column is the *mean* of the steps it covers (a max would draw every noisy spike). The curves
never rely on colour alone (16-colour terminals, colour-blind users): train is a solid dotted
line, validation a line with a ◆ at every evaluation, and another run laid over for comparison
(``set_overlay``) is drawn with half the dots and ◇ markers, named in the legend. Replaying the
lecture, each finished rung's val curve stays on the chart the same way (``add_rung_curve``) while
the live curves start again with the next rung. A legend too wide for one line takes two.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

from chargpt_tui.tui.widgets.maximize import MAXIMIZE_BINDING, toggle_maximize

# Bit for the dot at (column 0/1, row 0-3) inside one braille cell (U+2800 + bits).
BRAILLE_DOTS = ((0x01, 0x08), (0x02, 0x10), (0x04, 0x20), (0x40, 0x80))
AXIS_WIDTH = 7  # "  2.80┤"
MARKER_GAP = 3  # cells between evaluation markers at least, so they never hide the line
TRAIN_STYLE, VAL_STYLE = "cyan", "bold magenta"
OVERLAY_TRAIN_STYLE, OVERLAY_VAL_STYLE = "green", "yellow"
# Further compared runs (several folders, a sweep, a ladder): their val curves, in turn.
MORE_OVERLAY_STYLES = ("blue", "red", "bright_green", "bright_cyan", "bright_yellow", "white")
Points = tuple[tuple[int, float], ...]


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


@dataclass(frozen=True)
class Curve:
    """One series laid out on the dot grid: its line's dots and its marker dots."""

    style: str
    dots: frozenset[tuple[int, int]]
    markers: frozenset[tuple[int, int]]  # evaluations (validation curves only)
    marker: str = ""
    dotted: bool = False  # drawn with every other dot column: tells an overlay apart


class LossChart(Widget):
    """Train (every step) and val (every eval) losses, optionally with another run's curves.
    Focusable so that F6 can maximise it for a closer look."""

    can_focus = True
    ALLOW_MAXIMIZE = True
    BINDINGS = [MAXIMIZE_BINDING]

    train_points: reactive[Points] = reactive(tuple, layout=False)
    val_points: reactive[Points] = reactive(tuple, layout=False)
    overlay_label: reactive[str] = reactive("", layout=False)
    overlay_train: reactive[Points] = reactive(tuple, layout=False)
    overlay_val: reactive[Points] = reactive(tuple, layout=False)
    more_overlays: reactive[tuple[tuple[str, Points], ...]] = reactive(tuple, layout=False)
    # The lecture's finished rungs (--lecture): kept whatever is compared (F10) meanwhile.
    rung_curves: reactive[tuple[tuple[str, Points], ...]] = reactive(tuple, layout=False)
    live_label: reactive[str] = reactive("", layout=False)  # the rung training now, if any

    def set_overlay(self, label: str, train: Sequence[tuple[int, float]],
                    val: Sequence[tuple[int, float]]) -> None:
        """Lay another run's curves over this one's (e.g. ``--compare RUN_DIR``)."""
        self.overlay_label = label
        self.overlay_train = tuple(train)
        self.overlay_val = tuple(val)

    def set_overlays(self, runs: Sequence[tuple[str, Sequence[tuple[int, float]],
                                                Sequence[tuple[int, float]]]]) -> None:
        """Several runs: the first as :meth:`set_overlay`, the others by their val curves."""
        first, *rest = runs or [("", (), ())]
        self.set_overlay(*first)
        self.more_overlays = tuple((label, tuple(val)) for label, _, val in rest)

    def clear_overlay(self) -> None:
        self.set_overlays([])

    def add_rung_curve(self, rung: str, val: Sequence[tuple[int, float]]) -> None:
        """A finished rung's val curve, named in the legend by the rung."""
        self.rung_curves = (*self.rung_curves, (rung, tuple(val)))

    def extra_curves(self) -> tuple[tuple[str, Points], ...]:
        """The val curves drawn beside the overlay: more compared runs, then finished rungs."""
        return (*self.more_overlays, *self.rung_curves)

    def action_toggle_maximize(self) -> None:
        toggle_maximize(self)

    # -- layout -----------------------------------------------------------------------------

    def series(self) -> list[tuple[Points, str, str, bool]]:
        """(points, style, marker, dotted) in drawing order: the overlay first, so this run's
        own curves stay on top where they cross."""
        chosen: list[tuple[Points, str, str, bool]] = []
        if self.overlay_label:
            chosen += [(self.overlay_train, OVERLAY_TRAIN_STYLE, "", True),
                       (self.overlay_val, OVERLAY_VAL_STYLE, "◇", True)]
        chosen += [(val, MORE_OVERLAY_STYLES[i % len(MORE_OVERLAY_STYLES)], "◇", True)
                   for i, (_, val) in enumerate(self.extra_curves())]
        chosen += [(self.train_points, TRAIN_STYLE, "", False),
                   (self.val_points, VAL_STYLE, "◆", False)]
        return chosen

    def curves(self, dot_columns: int, dot_rows: int) -> tuple[list[Curve], float, float,
                                                                 int, int]:
        """Every series on a ``dot_columns × dot_rows`` grid sharing one scale; also returns
        the loss range (low, high) and step range (first, last) of the axes."""
        chosen = self.series()
        steps = [step for points, *_ in chosen for step, _ in points]
        first, last = min(steps), max(steps)
        columns = [bucket_means(points, first, last, dot_columns) for points, *_ in chosen]
        values = [v for column in columns for v in column if v is not None]
        low, high = min(values), max(values)
        if high - low < 1e-6:
            low, high = low - 0.5, high + 0.5
        scale = (dot_rows - 1) / (high - low)
        curves = []
        for (_, style, marker, dotted), column_values in zip(chosen, columns):
            points = [(x, (high - v) * scale) for x, v in enumerate(column_values)
                      if v is not None]
            curves.append(Curve(
                style, frozenset(line_dots(points)),
                frozenset((x, round(y)) for x, y in points) if marker else frozenset(),
                marker, dotted))
        return curves, low, high, first, last

    # -- drawing ----------------------------------------------------------------------------

    def render(self) -> Text:
        width = self.size.width - AXIS_WIDTH
        legend = self.legend_lines(self.size.width)
        plot_rows = self.size.height - 1 - len(legend)  # below the plot: step axis, legend
        if width < 4 or plot_rows < 1:
            return Text("")
        if not any(points for points, *_ in self.series()):
            return Text("loss curve appears after the first steps", style="dim")
        curves, low, high, first, last = self.curves(width * 2, plot_rows * 4)
        cells = [[0] * width for _ in range(plot_rows)]
        owner: list[list[str]] = [[""] * width for _ in range(plot_rows)]  # the cell's style
        glyphs: dict[tuple[int, int], tuple[str, str]] = {}
        for curve in curves:
            for dot_x, dot_y in curve.dots:
                if curve.dotted and dot_x % 2:
                    continue
                row, col = dot_y // 4, dot_x // 2
                cells[row][col] |= BRAILLE_DOTS[dot_y % 4][dot_x % 2]
                owner[row][col] = curve.style
            last_col = -MARKER_GAP
            for dot_x, dot_y in sorted(curve.markers):
                if dot_x // 2 - last_col >= MARKER_GAP:  # dense evaluations: every few cells
                    glyphs[dot_y // 4, dot_x // 2] = (curve.marker, curve.style)
                    last_col = dot_x // 2

        text = Text(no_wrap=True, overflow="crop")
        middle = plot_rows // 2
        for row in range(plot_rows):
            if row == 0:
                axis = f"{high:6.2f}┤"
            elif row == plot_rows - 1:
                axis = f"{low:6.2f}┤"
            else:
                axis = "  loss│" if row == middle else "      │"
            text.append(axis, style="dim")
            for col in range(width):
                if (row, col) in glyphs:
                    glyph, style = glyphs[row, col]
                    text.append(glyph, style=style)
                elif cells[row][col]:
                    text.append(chr(0x2800 + cells[row][col]), style=owner[row][col])
                else:
                    text.append(" ")
            text.append("\n")
        text.append_text(self.step_axis(first, last, width))
        for line in legend:
            text.append("\n")
            text.append_text(line)
        return text

    def step_axis(self, first: int, last: int, width: int) -> Text:
        """``      └0 ──── step ──── 1500`` under the plot."""
        left, right, label = str(first), str(last), " step "
        fill = width - 1 - len(left) - len(right) - len(label)
        axis = Text(" " * (AXIS_WIDTH - 1) + "└", style="dim")
        if fill < 2:
            axis.append(f"{left}…{right}"[:width], style="dim")
            return axis
        axis.append(left)
        axis.append(" " + "─" * (fill // 2 - 1) + label + "─" * (fill - fill // 2 - 1) + " ",
                    style="dim")
        axis.append(right)
        return axis

    def legend(self, width: int | None = None) -> Text:
        """The legend's lines as one text (on one line unless ``width`` is given)."""
        return Text("\n").join(self.legend_lines(width))

    def legend_lines(self, width: int | None) -> list[Text]:
        """The curves' names (and the live ones' latest values), on as few lines of ``width``
        cells as they fit (one line for ``None``)."""
        train, val = self.train_points, self.val_points
        live = f"{self.live_label} " if self.live_label else ""
        # Each item: its (text, style) pieces; the gap before an item takes its first style.
        items: list[list[tuple[str, str]]] = [[(f"⠒⠒ {live}train", TRAIN_STYLE)],
                                              [(f"◆ {live}val", VAL_STYLE)]]
        if train:
            items[0].append((f" {statistics.mean(v for _, v in train[-20:]):.3f}", TRAIN_STYLE))
        if val:
            items[1].append((f" {val[-1][1]:.3f}", VAL_STYLE))
        if self.overlay_label:
            items.append([(f"⠂⠂ {self.overlay_label} train", OVERLAY_TRAIN_STYLE)])
            items.append([(f"◇ {self.overlay_label} val", OVERLAY_VAL_STYLE)])
        items += [[(f"◇ {label}", MORE_OVERLAY_STYLES[i % len(MORE_OVERLAY_STYLES)])]
                  for i, (label, _) in enumerate(self.extra_curves())]
        lines = [Text(" " * AXIS_WIDTH)]
        for pieces in items:
            line = lines[-1]
            if line.cell_len > AXIS_WIDTH:  # not the line's first item
                wide = line.cell_len + 2 + sum(len(piece) for piece, _ in pieces)
                if width is not None and wide > width:
                    line = Text(" " * AXIS_WIDTH)
                    lines.append(line)
                else:
                    pieces = [("  " + pieces[0][0], pieces[0][1]), *pieces[1:]]
            for piece, style in pieces:
                line.append(piece, style=style)
        return lines
