"""Textual's Footer, minus a leak that a long session would feel."""

from __future__ import annotations

from textual.widgets import Footer as TextualFooter


class Footer(TextualFooter):
    """Every bindings refresh recomposes the footer, and each new key binds itself to the
    footer's ``compact`` reactive. Textual (8.2.8) drops the watchers of removed keys only
    when ``compact`` changes, which it never does here: each refresh kept ~10 dead keys alive
    (the soak test measured ~0.4 MB per prompt). Re-announcing the value prunes them."""

    async def recompose(self) -> None:
        await super().recompose()
        self.mutate_reactive(TextualFooter.compact)
