"""Small text formatters shared by the panels (pure functions, easy to test)."""

from __future__ import annotations

# Characters that would break a one-line display get a visible stand-in.
VISIBLE_CHARS = {"\n": "⏎", " ": "␣", "\t": "⇥", "\r": "␍"}


def visible_char(char: str) -> str:
    """A one-cell, visible rendering of a vocabulary character."""
    if char in VISIBLE_CHARS:
        return VISIBLE_CHARS[char]
    if not char.isprintable():
        return "·"
    return char


def duration(seconds: float | None) -> str:
    """``75`` → ``1:15``; ``3725`` → ``1:02:05``; None → ``–``."""
    if seconds is None or seconds != seconds or seconds == float("inf"):
        return "–"
    whole = int(round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def count(number: float) -> str:
    """``25_400`` → ``25.4k``; ``10_650_000`` → ``10.65M``."""
    if number >= 1e6:
        return f"{number / 1e6:.2f}M"
    if number >= 1e3:
        return f"{number / 1e3:.1f}k"
    return f"{number:.0f}"


WHITESPACE_SHARE = 0.75  # at least this share of an answer being whitespace: show markers


def whitespace_share(text: str) -> float:
    """Share of ``text`` that is whitespace (0 for empty text)."""
    return sum(char.isspace() for char in text) / len(text) if text else 0.0


def mark_whitespace(text: str) -> str:
    """Spaces as ``␣``, tabs as ``⇥``, and a ``⏎`` before each line break (which is kept):
    an answer made (mostly) of whitespace would otherwise look like no answer at all."""
    return "".join(VISIBLE_CHARS.get(char, char) + ("\n" if char == "\n" else "")
                   for char in text)
