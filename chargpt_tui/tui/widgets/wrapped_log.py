"""A scrollable list of text entries that keeps their source and re-wraps them to the width.

Textual's ``RichLog`` wraps each line once, when written: after a resize the old lines stay cut
at the old width. This view keeps every entry as a ``Text`` and its wrapped rows: an append or
a change to the newest entry wraps only that entry, a width change re-wraps them all. It
follows the end while the user is at the end, and stays put once they scrolled back.
"""

from __future__ import annotations

from collections import deque

from rich.text import Text
from textual.events import Resize
from textual.geometry import Size
from textual.scroll_view import ScrollView
from textual.strip import Strip

from chargpt_tui.tui.widgets.maximize import MAXIMIZE_BINDING, toggle_maximize


class WrappedLog(ScrollView):
    """Focusable (arrows, PageUp/PageDown, Home/End scroll); F6 maximises it."""

    can_focus = True
    ALLOW_MAXIMIZE = True
    BINDINGS = [MAXIMIZE_BINDING]

    def __init__(self, *, max_entries: int, id: str | None = None) -> None:
        super().__init__(id=id)
        self.texts: deque[Text] = deque(maxlen=max_entries)
        self._rows: deque[int] = deque()  # wrapped row count of each entry
        self._lines: list[Strip] = []  # every entry's wrapped rows, oldest first
        self._wrap_width = 0
        # Follow the newest entry until the user scrolls up; again once they are back at the
        # end. A flag, not "is the view at the end now": entries logged before the first
        # layout (height 0) would otherwise leave the view stuck at the top.
        self._follow = True

    # -- content --------------------------------------------------------------------------

    def append(self, entry: Text) -> None:
        follow = self._follow
        if len(self.texts) == self.texts.maxlen:
            del self._lines[:self._rows.popleft()]
        self.texts.append(entry)
        wrapped = self._wrap(entry)
        self._rows.append(len(wrapped))
        self._lines.extend(wrapped)
        self._content_changed(follow)

    def replace_last(self, entry: Text) -> None:
        """Swap the newest entry (one being streamed in): re-wraps only that one."""
        if not self.texts:
            self.append(entry)
            return
        follow = self._follow
        self.texts[-1] = entry
        del self._lines[len(self._lines) - self._rows.pop():]
        wrapped = self._wrap(entry)
        self._rows.append(len(wrapped))
        self._lines.extend(wrapped)
        self._content_changed(follow)

    def clear(self) -> None:
        self.texts.clear()
        self._rows.clear()
        self._lines.clear()
        self._content_changed(True)

    @property
    def row_count(self) -> int:
        return len(self._lines)

    def row_text(self, index: int) -> str:
        return self._lines[index].text

    # -- wrapping -------------------------------------------------------------------------

    def _width(self) -> int:
        return max(1, self.scrollable_content_region.width)

    def _wrap(self, entry: Text) -> list[Strip]:
        console = self.app.console
        width = self._wrap_width or self._width()
        return [Strip(list(line.render(console)), line.cell_len)
                for line in entry.wrap(console, width)] or [Strip.blank(0)]

    def _rewrap(self) -> None:
        self._wrap_width = self._width()
        self._rows.clear()
        self._lines.clear()
        for entry in self.texts:
            wrapped = self._wrap(entry)
            self._rows.append(len(wrapped))
            self._lines.extend(wrapped)

    def on_resize(self, event: Resize) -> None:
        follow = self._follow
        if self._width() != self._wrap_width:
            self._rewrap()
        self._content_changed(follow)

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_y(old_value, new_value)
        self._follow = new_value >= self.max_scroll_y

    def _content_changed(self, follow: bool) -> None:
        self.virtual_size = Size(self._wrap_width, len(self._lines))
        if follow:
            self.scroll_end(animate=False, immediate=False, x_axis=False)
        self.refresh()

    def on_mount(self) -> None:
        self._rewrap()
        self._content_changed(True)

    # -- drawing --------------------------------------------------------------------------

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        width = self.scrollable_content_region.width
        index = scroll_y + y
        style = self.rich_style
        if index >= len(self._lines):
            return Strip.blank(width, style)
        return self._lines[index].crop_extend(scroll_x, scroll_x + width, style).apply_style(
            style)

    # -- keys -----------------------------------------------------------------------------

    def action_toggle_maximize(self) -> None:
        toggle_maximize(self)
