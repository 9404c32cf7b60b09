"""The one-glance training status: step, speed, learning rate, time, device, size, state."""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual.geometry import Size
from textual.reactive import reactive
from textual.widget import Widget

from chargpt_tui.tui.formatting import count, duration

STATE_STYLES = {"training": "bold green", "paused": "bold yellow", "finished": "bold cyan",
                "stopped": "bold magenta", "failed": "bold red", "chat only": "bold cyan",
                "loading": "bold", "stopping": "bold magenta",
                "following": "bold blue", "evaluating": "bold green"}


@dataclass(frozen=True)
class Stats:
    state: str = "loading"
    step: int = 0
    max_iters: int | None = 0  # None: a time budget's step count, not known yet
    tokens_per_second: float | None = None
    lr: float | None = None
    elapsed: float | None = None
    eta: float | None = None
    device: str = "–"
    parameters: int | None = None
    detail: str = ""  # e.g. download progress or why training stopped
    recipe: str = ""  # lecture / fast / custom
    steps_estimated: bool = False  # max_iters is what a time budget allows at the recent pace
    best: str = ""  # "best val 1.46 @ step 1750": the weights prompts get after the run
    budget: float | None = None  # a time budget's seconds: elapsed reads as a clock, "0:42 / 5:00"
    evaluated: str = ""  # "12/40 batches": how far an evaluation is (shown while evaluating)


class StatsLine(Widget):
    """Always shows every field (``–`` until known) so the layout never jumps."""

    stats: reactive[Stats] = reactive(Stats)

    def __init__(self, *, show_timing: bool = True, id: str | None = None) -> None:
        super().__init__(id=id)
        # Snapshot tests turn wall-clock figures off: they differ on every run.
        self.show_timing = show_timing
        self._measured = 0  # lines at the last layout

    def parts(self) -> list[Text]:
        s, timed = self.stats, self.show_timing
        state = Text(s.state, style=STATE_STYLES.get(s.state, "bold"))
        if s.state == "evaluating" and s.evaluated:
            state.append(f" {s.evaluated}", style="dim")
        if s.detail:
            state.append(f" ({s.detail})", style="dim")
        fields = [
            ("step ", f"{s.step}/{'~' if s.steps_estimated else ''}{s.max_iters or '?'}"
             if s.max_iters or s.steps_estimated else f"{s.step}"),
            ("", f"{count(s.tokens_per_second)} tok/s"
             if timed and s.tokens_per_second is not None else "– tok/s"),
            ("lr ", f"{s.lr:.2e}" if s.lr is not None else "–"),
            ("elapsed ", "–" if not timed else duration(s.elapsed) if not s.budget
             else f"{duration(s.elapsed)} / {duration(s.budget)}"),
            ("ETA ", duration(s.eta) if timed and s.state == "training" else "–"),
            ("", s.device),
            ("", f"{count(s.parameters)} params" if s.parameters is not None else "– params"),
        ]
        if s.recipe:
            fields.append(("recipe ", s.recipe))
        if s.best:
            fields.append(("", s.best))
        return [state, *(Text.assemble((label, "dim"), value) for label, value in fields)]

    def lines(self, width: int) -> list[Text]:
        """Pack the fields into lines, never breaking one (a wrapped "ETA 0:4/5" misleads)
        unless it is wider than a line alone (a long reason a run stopped for): that one is
        wrapped at its spaces, so the lines counted are the lines drawn."""
        lines: list[Text] = []
        for part in self.parts():
            if lines and lines[-1].cell_len + 3 + part.cell_len <= width:
                lines[-1].append(" · ", style="dim")
                lines[-1].append_text(part)
            elif part.cell_len > width > 0:
                lines.extend(part.wrap(self.app.console, width))
            else:
                lines.append(part.copy())
        return lines

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        self._measured = len(self.lines(width))
        return self._measured

    def render(self) -> Text:
        return Text("\n").join(self.lines(self.size.width))

    def watch_stats(self, old: Stats, new: Stats) -> None:
        # Re-measure only when the line count can change (not on every step), and look again
        # after the next refresh: Textual keeps the height it measured during a layout that
        # was already pending, so a change in that window would leave a line cut off (seen
        # once: a followed run's "best val" missing until the next change, which never came).
        if self._remeasure():
            self.call_after_refresh(self._remeasure)

    def _remeasure(self) -> bool:
        """Ask for a new layout if the line count differs from the one last measured (not the
        height: a max-height, as at 80×24, can keep the two apart); True if it did."""
        width = self.size.width
        if width and len(self.lines(width)) != self._measured:
            self.refresh(layout=True)
            return True
        return False
