"""F6 on a focused panel: fill the screen with it; F6 or Escape again restores the layout."""

from __future__ import annotations

from textual.binding import Binding
from textual.widget import Widget

MAXIMIZE_BINDING = Binding("f6", "toggle_maximize", "max",
                           tooltip="Maximise this panel (F6 or Escape restores)")


def toggle_maximize(widget: Widget) -> None:
    screen = widget.screen
    if screen.maximized is not None:
        screen.minimize()
    else:
        screen.maximize(widget, container=False)
