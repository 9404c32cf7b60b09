"""What the model expects next: the likeliest next characters after the typed text, as bars."""

from __future__ import annotations

from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

from chargpt_tui.tui.formatting import visible_char

BAR_WIDTH = 5
EIGHTHS = " ▏▎▍▌▋▊▉█"


def bar(fraction: float, width: int = BAR_WIDTH) -> str:
    """A horizontal bar with 1/8-cell resolution."""
    eighths = round(max(0.0, min(1.0, fraction)) * width * 8)
    full, part = divmod(eighths, 8)
    return ("█" * full + (EIGHTHS[part] if part else "")).ljust(width)


class NextChars(Widget):
    candidates: reactive[tuple[tuple[str, float], ...]] = reactive(tuple)
    step: reactive[int | None] = reactive(None)

    def render(self) -> Text:
        text = Text(no_wrap=True, overflow="crop")
        text.append("next ", style="dim")
        if not self.candidates:
            text.append("(the likeliest next characters appear here)", style="dim")
            return text
        cell = 1 + 1 + BAR_WIDTH + 4 + 2  # char, space, bar, " 31%", gap
        room = max(1, (self.size.width - 5) // cell)
        for char, prob in self.candidates[:room]:
            text.append(visible_char(char), style="bold")
            text.append(" ")
            text.append(bar(prob), style="green")
            text.append(f"{prob * 100:3.0f}%  ")
        return text
