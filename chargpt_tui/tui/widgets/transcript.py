"""The chat transcript: each prompt with its continuation streaming in underneath."""

from __future__ import annotations

from rich.text import Text
from textual.containers import VerticalScroll
from textual.events import Resize
from textual.widgets import Static

from chargpt_tui.sampling import BeamResult
from chargpt_tui.tui.formatting import WHITESPACE_SHARE, mark_whitespace, whitespace_share
from chargpt_tui.tui.widgets.maximize import MAXIMIZE_BINDING, toggle_maximize

BEAM_TAIL_MIN = 8  # characters of each beam listed under a beam-search answer, at least
# Older answers are dropped beyond this: each entry is a widget with its own render caches,
# so an all-day session would otherwise grow without end.
MAX_ENTRIES = 50


class TranscriptEntry(Static):
    """One prompt and its answer; the answer grows as the generation worker produces it."""

    def __init__(self, prompt: str, settings: str, *, show_timing: bool = True) -> None:
        super().__init__()
        self.prompt = prompt
        self.settings = settings
        self.show_timing = show_timing
        self.answer = ""  # sampling: all text; beam search: the prefix every beam shares
        self.tentative = ""  # beam search: the current best beam beyond the stable prefix
        self.status = "waiting for the model…"
        self.warnings: list[str] = []
        self.beams: BeamResult | None = None

    def on_mount(self) -> None:
        self.update(self.render_entry())

    def render_entry(self) -> Text:
        text = Text()
        text.append("› ", style="dim")  # marks where a prompt starts, also without colours
        text.append(self.prompt, style="bold cyan")
        answer = self.answer + self.tentative
        if answer and whitespace_share(answer) >= WHITESPACE_SHARE:
            # Blank-looking output: show what it is made of rather than an empty entry.
            text.append(mark_whitespace(self.answer), style="dim")
            text.append(mark_whitespace(self.tentative), style="dim italic")
            if not answer.strip():
                text.append(" (only whitespace)", style="dim italic")
        else:
            text.append(self.answer)
            text.append(self.tentative, style="dim italic")
        text.append("\n")
        for warning in self.warnings:
            text.append(f"⚠ {warning}\n", style="yellow")
        if self.beams:
            for rank, (beam, score) in enumerate(zip(self.beams.texts, self.beams.scores), 1):
                # One line per beam, showing its end: that is where beams differ.
                label = f"  beam {rank} ({score:.2f}) "
                room = max(BEAM_TAIL_MIN, (self.size.width or 80) - len(label) - 1)
                tail = beam.replace("\n", "⏎")
                tail = tail if len(tail) <= room else "…" + tail[-room:]
                text.append(label, style="dim")
                text.append(f"{tail}\n", style="" if rank == 1 else "dim")
        text.append(f"{self.status}", style="dim")
        return text

    def on_resize(self, event: Resize) -> None:
        if self.beams:  # beam lines are cut to the width: cut them again
            self.refresh_text()

    def set_status(self, status: str) -> None:
        self.status = status
        self.update(self.render_entry())

    def refresh_text(self) -> None:
        self.update(self.render_entry())


class Transcript(VerticalScroll):
    """Focusable so it scrolls with keys (the prompt input has focus at start: typing still
    goes there); F6 maximises it."""

    ALLOW_MAXIMIZE = True
    BINDINGS = [MAXIMIZE_BINDING]

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        # The view shows the newest answer (its end, or its prompt line when it is taller than
        # the view): a resize re-wraps every entry and moves them all, so the view is put back
        # on the newest one. False once the user scrolled elsewhere, to read an older answer.
        self._following = True

    def add_entry(self, entry: TranscriptEntry) -> None:
        """Append an answer; the oldest go once there are too many (only the newest can still
        be generating: a new prompt cancels the one before)."""
        self.mount(entry)
        entries = self.query(TranscriptEntry)
        if len(entries) > MAX_ENTRIES:
            self.remove_children(list(entries)[:len(entries) - MAX_ENTRIES])
        self.scroll_end(animate=False)

    def follow(self, entry: TranscriptEntry) -> None:
        """Keep a growing answer in view without scrolling its prompt away: follow the end
        until the entry fills the view, then keep its first line (the prompt) at the top."""
        self._following = True
        top = entry.virtual_region.y
        if entry.outer_size.height >= self.scrollable_content_region.height:
            self.scroll_to(y=top, animate=False)
        else:
            self.scroll_end(animate=False)

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_y(old_value, new_value)
        entries = self.query(TranscriptEntry)
        self._following = (new_value >= self.max_scroll_y
                           or bool(entries) and new_value == entries.last().virtual_region.y)

    def on_resize(self, event: Resize) -> None:
        if self._following:  # after the entries' new layout at this width
            self.call_after_refresh(self._follow_newest)

    def _follow_newest(self) -> None:
        entries = self.query(TranscriptEntry)
        if entries:
            self.follow(entries.last())

    def action_toggle_maximize(self) -> None:
        toggle_maximize(self)
