"""The headless byte bars: a download's from its first call, an encoding's only after a delay."""

from __future__ import annotations

import pytest

from chargpt_tui import headless


@pytest.mark.parametrize("delay", [0.0, 60.0])
def test_a_bytes_bar_starts_only_after_its_delay(delay: float, capsys: pytest.CaptureFixture
                                                 ) -> None:
    with headless.bytes_bar((headless.TextColumn("moving"),), enabled=True,
                            delay=delay) as update:
        update(10, 100)
        update(100, 100)
    # The bar is transient, so it is drawn and then cleared: only the cursor codes are left.
    assert bool(capsys.readouterr().err) == (delay == 0.0)

