"""The lecture's ladder (``chargpt-tui --lecture``): each rung's val loss beside the lecture's.

One row per rung: its name, what it adds, its val loss (the latest evaluation's while it trains,
"—" before it starts), the lecture's number and the difference. Where the panel has no room for
a table (a narrow or short terminal, e.g. 80×24) the rungs are packed a few to a line as
``rung val/lecture``. A difference within the issue's ±0.06 is green, a wider one yellow.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from rich.console import RenderableType
from rich.table import Table
from rich.text import Text
from textual.geometry import Size
from textual.reactive import reactive
from textual.widget import Widget

from chargpt_tui.lecture import Rung

CLOSE_ENOUGH = 0.06  # the target: each rung within ±0.06 of the lecture's number
STATE_STYLES = {"training": "bold green", "finished": "", "stopped": "magenta",
                "failed": "red", "waiting": "dim"}


@dataclass(frozen=True)
class RungRow:
    name: str
    adds: str
    lecture: float  # the val loss the lecture reports
    state: str = "waiting"  # waiting, training, then the trainer's: finished, stopped, failed
    val: float | None = None  # the last evaluation's (while training: the latest so far)

    def val_text(self) -> str:
        if self.state == "waiting":
            return "—"
        if self.val is None:
            return "training…" if self.state == "training" else self.state
        suffix = {"training": "…", "stopped": " (stopped)", "failed": " (failed)"}
        return f"{self.val:.3f}{suffix.get(self.state, '')}"

    def difference(self) -> Text:
        if self.val is None or self.state in ("waiting", "training"):
            return Text("")
        delta = self.val - self.lecture
        return Text(f"{delta:+.2f}", style="green" if abs(delta) <= CLOSE_ENOUGH else "yellow")


class LadderPanel(Widget):
    """The rungs of a lecture replayed here, updated as they start and finish."""

    rows: reactive[tuple[RungRow, ...]] = reactive(tuple, layout=True)

    def __init__(self, rungs: Sequence[Rung], *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.set_reactive(LadderPanel.rows, tuple(
            RungRow(rung.name, rung.adds, rung.lecture_val_loss) for rung in rungs))

    # -- updates (UI thread) --------------------------------------------------------------------

    def _update(self, name: str, **changes: Any) -> None:
        self.rows = tuple(replace(row, **changes) if row.name == name else row
                          for row in self.rows)

    def rung_started(self, name: str) -> None:
        self._update(name, state="training", val=None)

    def live_val(self, val_loss: float) -> None:
        """The rung in training's latest evaluation."""
        training = next((row for row in self.rows if row.state == "training"), None)
        if training is not None:
            self._update(training.name, val=val_loss)

    def rung_finished(self, name: str, state: str, val_loss: float | None) -> None:
        self._update(name, state=state, val=val_loss)

    # -- drawing ----------------------------------------------------------------------------

    @property
    def roomy(self) -> bool:
        """Room for the table: side by side (100 columns and more) on 30 rows and more. Stacked
        or short, the training panel keeps its rows for the chart and the sample."""
        return self.screen.has_class("-wide") and self.screen.has_class("-tall")

    @property
    def compact(self) -> bool:
        """Rungs packed a few to a line (also when the panel was cut shorter than the table)."""
        return not self.roomy or 0 < self.size.height < len(self.rows) + 1

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        return len(self.rows) + 1 if self.roomy else len(self.packed_lines(width))

    def render(self) -> RenderableType:
        if self.compact:
            text = Text(no_wrap=True, overflow="ellipsis")
            for i, line in enumerate(self.packed_lines(self.size.width)):
                if i:
                    text.append("\n")
                text.append_text(line)
            return text
        table = Table(box=None, expand=True, header_style="bold", padding=(0, 1, 0, 0),
                      show_edge=False)
        table.add_column("rung", no_wrap=True)
        table.add_column("what it adds", no_wrap=True, overflow="ellipsis", ratio=1,
                         style="dim")
        table.add_column("val", justify="right", no_wrap=True)
        table.add_column("lecture", justify="right", no_wrap=True)
        table.add_column("Δ", justify="right", no_wrap=True)
        for row in self.rows:
            table.add_row(Text(row.name, style=STATE_STYLES.get(row.state, "")), row.adds,
                          Text(row.val_text(), style=STATE_STYLES.get(row.state, "")),
                          f"{row.lecture:.2f}", row.difference())
        return table

    def cell(self, row: RungRow) -> Text:
        """``multi-head 2.31/2.28``: the rung, its val (or state) and the lecture's."""
        style = STATE_STYLES.get(row.state, "")
        text = Text(row.name, style=style or "bold")
        if row.val is None:
            value = {"waiting": "—", "training": "…"}.get(row.state, row.state)
        else:
            value = f"{row.val:.2f}" + {"training": "…", "stopped": " stopped",
                                        "failed": " failed"}.get(row.state, "")
        if row.state == "finished" and row.val is not None:
            style = "green" if abs(row.val - row.lecture) <= CLOSE_ENOUGH else "yellow"
        text.append(f" {value}", style=style)
        text.append(f"/{row.lecture:.2f}", style="dim")
        return text

    def packed_lines(self, width: int) -> list[Text]:
        """The rungs' cells, as many to a line as fit ``width`` (two spaces apart)."""
        lines: list[Text] = []
        line = Text("val/lecture ", style="dim")
        for row in self.rows:
            cell = self.cell(row)
            if line.cell_len and line.cell_len + 2 + cell.cell_len > width and line.plain.strip():
                lines.append(line)
                line = Text()
            elif line.plain and not line.plain.endswith(" "):
                line.append("  ")
            line.append_text(cell)
        lines.append(line)
        return lines
