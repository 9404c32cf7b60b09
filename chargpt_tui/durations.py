"""Durations as people write them: ``5m``, ``90s``, ``1h``, ``1m30s`` (for --time-budget)."""

from __future__ import annotations

import math

from chargpt_tui.errors import ConfigError


def format_duration(seconds: float) -> str:
    """90 → '1m30s', 300 → '5m', 12.5 → '12.5s'."""
    minutes, rest = divmod(seconds, 60)
    if not minutes:
        return f"{rest:g}s"
    return f"{minutes:.0f}m" + (f"{rest:g}s" if rest else "")


def parse_duration(text: str) -> float:
    """'5m', '90s', '1h', '1m30s' or plain seconds ('300') → seconds."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0}
    total, number = 0.0, ""
    try:
        for char in text.strip().lower():
            if char in units:
                total += float(number) * units[char]
                number = ""
            else:
                number += char
        total += float(number) if number else 0.0
    except ValueError:
        raise ConfigError(f"cannot read the duration {text!r}",
                          "use e.g. 5m, 90s, 1h or 1m30s") from None
    if not 0 < total < math.inf:
        raise ConfigError(f"the duration {text!r} is not positive", "use e.g. 5m or 90s")
    return total
