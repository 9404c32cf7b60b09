"""Several runs laid over the loss chart at once: --compare A --compare B, or a sweep folder."""

from __future__ import annotations

import pytest

from chargpt_tui.tui.widgets.loss_chart import MORE_OVERLAY_STYLES, OVERLAY_VAL_STYLE, LossChart


def test_several_compared_runs_each_draw_their_val_curve_named_in_the_legend() -> None:
    chart = LossChart()
    chart.train_points = tuple((step, 4.0 - step / 50) for step in range(100))
    chart.val_points = ((0, 4.1), (50, 3.2), (99, 2.2))
    runs = [(f"lr={lr}", [(s, 3.5) for s in range(100)], [(0, 4.0), (99, level)])
            for lr, level in (("1e-3", 2.5), ("3e-3", 2.3), ("1e-2", 2.9))]
    chart.set_overlays(runs)
    curves, low, high, *_ = chart.curves(120, 32)
    # the first run as a single overlay (train and val), the others by their val curves,
    # then this run's own two: six series, each compared val with its own style and markers
    assert [c.style for c in curves][1:4] == [OVERLAY_VAL_STYLE, *MORE_OVERLAY_STYLES[:2]]
    assert len(curves) == 6 and all(len(c.markers) == 2 for c in curves[1:4])
    assert (low, high) == (pytest.approx(2.02), 4.1)  # one scale for all: own train ends lowest
    legend = chart.legend().plain
    assert "◇ lr=1e-3 val" in legend and "◇ lr=3e-3" in legend and "◇ lr=1e-2" in legend
    chart.clear_overlay()
    assert len(chart.curves(120, 32)[0]) == 2 and "lr=" not in chart.legend().plain
