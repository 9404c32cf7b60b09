"""Pilot tests of the layout and the text panels: re-wrapping on resize, sizes at 80×24 and
120×40, keys that scroll and maximise, the live-sample history, the chart's overlay."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest
from rich.text import Text
from textual.widgets import Static
from tui_support import async_test, wait_until

from chargpt_tui.events import SampleChunk
from chargpt_tui.tui.app import ChargptApp
from chargpt_tui.tui.prompt_settings import PromptSettings
from chargpt_tui.tui.screens.help import HELP_TEXT
from chargpt_tui.tui.sources import OpenCheckpoint
from chargpt_tui.tui.widgets.event_log import EventLog
from chargpt_tui.tui.widgets.live_sample import MAX_SAMPLES, LiveSample
from chargpt_tui.tui.widgets.loss_chart import MARKER_GAP, TRAIN_STYLE, VAL_STYLE, LossChart
from chargpt_tui.tui.widgets.prompt_input import PromptInput
from chargpt_tui.tui.widgets.stats_line import Stats, StatsLine
from chargpt_tui.tui.widgets.training_panel import TrainingPanel
from chargpt_tui.tui.widgets.transcript import Transcript, TranscriptEntry

LONG_LINE = ("warning: could not download the default data (DNS lookup failed for "
             "raw.githubusercontent.com); training on the bundled fallback text instead, "
             "which is much smaller — pass --data FILE to train on your own text")


@pytest.fixture(autouse=True)
def no_downloads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHARGPT_TUI_CACHE", str(tmp_path / "cache"))


def idle_app() -> ChargptApp:
    """The app with nothing to train or open: the panels alone."""
    return ChargptApp(device="cpu", show_timing=False)


def rows(view: EventLog | LiveSample) -> list[str]:
    return [view.row_text(index) for index in range(view.row_count)]


def squeeze(text: str) -> str:
    return re.sub(r"\s+", "", text)


@async_test
async def test_a_long_log_line_survives_resizing_whole() -> None:
    app = idle_app()
    async with app.run_test(size=(120, 40)) as pilot:
        log = app.query_one(EventLog)
        log.add("first")
        log.add(LONG_LINE)
        log.add("last")
        whole = squeeze("first" + LONG_LINE + "last")
        widths = []
        for size in ((120, 40), (80, 24), (120, 40)):
            await pilot.resize_terminal(*size)
            await pilot.pause()
            width = log.scrollable_content_region.width
            widths.append(width)
            # Wrapped to this width: no row cut off, every character still there, in order
            # (wrapping only moves spaces).
            assert max(len(row.rstrip()) for row in rows(log)) <= width
            assert len(rows(log)) >= 3 + len(LONG_LINE) // width
            assert squeeze("".join(rows(log))) == whole
        assert widths[0] < widths[1] and widths[2] == widths[0]  # side by side, then stacked


@async_test
async def test_80x24_gives_the_chart_six_rows_and_shows_the_mode_line() -> None:
    app = idle_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        chart = app.query_one(LossChart)
        assert chart.size.height >= 6
        screen = app.screen.region
        for widget in (app.query_one("#settings-line", Static), app.query_one(PromptInput),
                       app.query_one(LiveSample), app.query_one(EventLog),
                       app.query_one(Transcript)):
            assert widget.display and widget.region.height >= 1, widget
            assert screen.contains_region(widget.region), widget
        assert "sample · T 0.8" in str(app.query_one("#settings-line", Static).render())


@pytest.mark.slow
@async_test
async def test_the_chart_and_samples_grow_with_the_window() -> None:
    app = idle_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        chart, sample = app.query_one(LossChart), app.query_one(LiveSample)
        tall_chart, tall_sample = chart.size.height, sample.size.height
        await pilot.resize_terminal(120, 60)
        await pilot.pause()
        assert chart.size.height > tall_chart and sample.size.height > tall_sample
        assert tall_chart >= 12 and tall_sample >= 6  # at 120×40 already


@pytest.mark.slow
@async_test
async def test_f6_maximises_the_focused_panel_and_escape_restores() -> None:
    app = idle_app()
    async with app.run_test(size=(80, 24)) as pilot:
        for widget in (app.query_one(EventLog), app.query_one(LossChart),
                       app.query_one(LiveSample), app.query_one(Transcript)):
            widget.focus()
            await pilot.press("f6")
            assert app.screen.maximized is widget
            assert widget.region.height >= 20  # fills the screen above the footer
            await pilot.press("f6")
            assert app.screen.maximized is None
            await pilot.press("f6", "escape")
            assert app.screen.maximized is None


@pytest.mark.slow
@async_test
async def test_the_log_scrolls_with_keys_when_focused() -> None:
    app = idle_app()
    async with app.run_test(size=(80, 24)) as pilot:
        log = app.query_one(EventLog)
        for number in range(40):
            log.add(f"line {number}")
        await pilot.pause()
        assert log.scroll_y == log.max_scroll_y > 0  # follows the newest
        log.focus()
        await pilot.press("pageup")
        assert log.scroll_y < log.max_scroll_y
        await pilot.press("home")
        assert log.scroll_y == 0 and rows(log)[0] == "line 0"
        log.add("line 40")  # scrolled back: a new line does not yank the view
        await pilot.pause()
        assert log.scroll_y == 0
        await pilot.press("end")
        assert log.scroll_y == log.max_scroll_y


@async_test
async def test_warnings_are_notified_and_kept_in_the_log() -> None:
    app = idle_app()
    async with app.run_test(size=(80, 24)) as pilot:
        app.query_one(EventLog).add("offline: training on the bundled text", "warning")
        await pilot.pause()
        assert [n.message for n in app._notifications] == [
            "offline: training on the bundled text"]
        assert app.query_one(EventLog).entries == [
            "warning: offline: training on the bundled text"]


@pytest.mark.slow
@async_test
async def test_every_live_sample_is_kept_with_its_step_and_scrolls_back() -> None:
    app = idle_app()
    async with app.run_test(size=(80, 24)) as pilot:
        view = app.query_one(LiveSample)
        await pilot.pause()
        assert "appears at every evaluation" in view.render_line(0).text
        for step in range(0, 50, 10):
            view.start(step)
            for char in f"text at {step}":  # streamed in pieces, as the drain timer does
                view.extend(char, done=False)
            view.extend("", done=True)
        await pilot.pause()
        assert view.history == [(step, f"text at {step}") for step in range(0, 50, 10)]
        assert view.scroll_y == view.max_scroll_y > 0  # the newest at the bottom
        view.focus()
        await pilot.press("home")
        # Home scrolls with an animation: on a loaded machine it may still be on its way
        await wait_until(pilot, lambda: view.scroll_y == 0, what="the scroll to the top")
        await pilot.pause()
        assert view.render_line(0).text.startswith("step 0 ▸ text at 0")
        for step in range(50, 50 + MAX_SAMPLES):  # bounded: the oldest go
            view.start(step)
            view.extend("x", done=True)
        assert len(view.history) == MAX_SAMPLES and view.history[0][0] == 50
        assert view.row_count == MAX_SAMPLES


@pytest.mark.slow
@async_test
async def test_the_live_sample_timer_runs_only_while_a_sample_streams(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Idle, its 30 Hz ticks were most of the app's CPU use, and each stalls training.
    ticks: list[int | None] = []
    drain = TrainingPanel._drain_samples

    def counted(panel: TrainingPanel) -> None:
        ticks.append(panel.query_one(LiveSample).step)
        drain(panel)

    monkeypatch.setattr(TrainingPanel, "_drain_samples", counted)
    app = idle_app()
    async with app.run_test(size=(80, 24)) as pilot:
        panel, view = app.query_one(TrainingPanel), app.query_one(LiveSample)
        await pilot.pause(0.3)
        assert ticks == []  # no sample yet
        for step in (10, 20):
            # From another thread, as the training thread sends them.
            await asyncio.to_thread(panel.show_event, SampleChunk(step, "To be"))
            await wait_until(pilot, lambda: view.body == "To be", what="the first chunk")
            before = len(ticks)
            await pilot.pause(0.3)
            assert len(ticks) > before  # streaming: the timer ticks
            await asyncio.to_thread(panel.show_event, SampleChunk(step, ", or not", final=True))
            await wait_until(pilot, lambda: view.done, what="the sample's end")
            assert view.history[-1] == (step, "To be, or not")
            after = len(ticks)
            await pilot.pause(0.3)
            assert len(ticks) == after  # asleep until the next sample
        # A followed run's log replays whole samples back to back: nothing left to stream.
        for step in (30, 40):
            panel.show_event(SampleChunk(step, f"whole at {step}", final=True))
        await wait_until(pilot, lambda: view.step == 40 and view.done, what="the replay")
        after = len(ticks)
        await pilot.pause(0.3)
        assert len(ticks) == after


@pytest.mark.slow
@async_test
async def test_a_streaming_answer_keeps_its_prompt_in_view(checkpoint: Path) -> None:
    app = ChargptApp(OpenCheckpoint(checkpoint), device="cpu", show_timing=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until(pilot, lambda: app.live_model.ready, what="model")
        app.prompt.settings = PromptSettings(length=600, seed=1)
        app.query_one(PromptInput).value = "ROMEO:"
        await pilot.press("enter")
        entry = app.query_one(TranscriptEntry)
        transcript = app.query_one(Transcript)
        await wait_until(pilot, lambda: "chars" in entry.status, what="the answer")
        await pilot.pause()
        assert entry.outer_size.height > transcript.size.height  # it did not fit
        assert transcript.scroll_y <= entry.virtual_region.y  # its prompt line is on screen
        assert app.query_one(PromptInput).region.height >= 1


def test_whitespace_answers_are_shown_with_markers() -> None:
    def shown(answer: str) -> str:
        entry = TranscriptEntry("ROMEO:", "sample")
        entry.answer = answer
        return entry.render_entry().plain

    assert shown("  \n\n ") == "› ROMEO:␣␣⏎\n⏎\n␣ (only whitespace)\nwaiting for the model…"
    mostly = shown("\n\n\n\n\n\n\n\nay")
    assert "⏎\n" in mostly and "only whitespace" not in mostly
    assert shown("Good morrow, sir") == "› ROMEO:Good morrow, sir\nwaiting for the model…"


def test_the_chart_compared_with_itself_draws_two_identical_curves() -> None:
    chart = LossChart()
    train = tuple((step, 4.0 - step / 50) for step in range(100))
    val = ((0, 4.1), (50, 3.2), (99, 2.2))
    chart.train_points, chart.val_points = train, val
    chart.set_overlay("baseline", train, val)
    curves, *_ = chart.curves(120, 32)
    overlay_train, overlay_val, own_train, own_val = curves
    assert overlay_train.dots == own_train.dots and overlay_val.dots == own_val.dots
    assert overlay_val.markers == own_val.markers and len(own_val.markers) == 3
    assert overlay_train.dotted and not own_train.dotted  # drawn distinguishably
    legend = chart.legend().plain
    assert "baseline train" in legend and "◇ baseline val" in legend
    chart.clear_overlay()
    assert len(chart.curves(120, 32)[0]) == 2 and "baseline" not in chart.legend().plain


@async_test
async def test_the_chart_draws_labelled_axes_evaluations_and_an_overlay() -> None:
    app = idle_app()
    async with app.run_test(size=(120, 40)) as pilot:
        chart = app.query_one(LossChart)
        chart.train_points = tuple((step, 4.0 - step / 50) for step in range(100))
        chart.val_points = ((0, 4.1), (50, 3.2), (99, 2.2))
        chart.set_overlay("other", [(step, 3.0) for step in range(100)], [(50, 3.0)])
        await pilot.pause()
        text = chart.render()
        assert isinstance(text, Text)
        plain = text.plain
        plot = plain.split("└")[0]  # above the step axis (the legend shows the glyphs too)
        assert "loss│" in plain and " step " in plain and "4.10┤" in plain
        assert plot.count("◆") == 3 and plot.count("◇") == 1
        styles = {str(span.style) for span in text.spans}
        assert TRAIN_STYLE in styles and VAL_STYLE in styles


@async_test
async def test_dense_evaluation_markers_are_thinned_so_the_line_shows() -> None:
    app = idle_app()
    async with app.run_test(size=(80, 24)) as pilot:
        chart = app.query_one(LossChart)
        chart.val_points = tuple((step, 4.0 - step / 100) for step in range(200))
        await pilot.pause()
        plot = chart.render().plain.splitlines()[:-2]
        columns = sorted(col for row in plot for col, char in enumerate(row) if char == "◆")
        assert len(columns) >= 10
        assert min(b - a for a, b in zip(columns, columns[1:])) >= MARKER_GAP


def test_help_fits_80_columns_and_names_the_charts_colours() -> None:
    lines = [re.sub(r"\[/?b\]", "", line) for line in HELP_TEXT.splitlines()]
    assert max(map(len, lines)) <= 76  # 80 columns less the dialog's border and padding
    assert "yellow" not in HELP_TEXT.split("comparison")[0]  # validation is not yellow
    assert TRAIN_STYLE in HELP_TEXT and VAL_STYLE.split()[-1] in HELP_TEXT


@async_test
async def test_the_palette_lists_quit_once() -> None:
    app = idle_app()
    async with app.run_test(size=(80, 24)):
        titles = [command.title for command in app.get_system_commands(app.screen)]
        assert titles.count("Quit") == 1


@pytest.mark.slow
@async_test
async def test_a_finished_runs_longer_stats_line_leaves_every_panel_in_view_at_80x24() -> None:
    """At the end of a run the stats line grows (the reason, the best step): at 80×24 it once
    pushed the live sample and the log out of the panel and cut the chart's axes, for good."""
    app = idle_app()
    reasons = ("", "time budget of 5m used", "early stop: val has not improved for 5 "
               "evaluations (best 1.4821 at step 2750); the model now holds its best weights")
    async with app.run_test(size=(80, 24)) as pilot:
        stats_line = app.query_one(StatsLine)
        for size in ((80, 24), (120, 40), (80, 24)):
            await pilot.resize_terminal(*size)
            for reason in reasons:
                stats_line.stats = Stats(
                    state="finished", detail=reason, step=1234, max_iters=1250,
                    steps_estimated=True, tokens_per_second=9_200.0, lr=3.01e-4, elapsed=299.0,
                    device="cpu", parameters=29_700, recipe="lecture",
                    best="best val 2.33 @ step 1000")
                await pilot.pause()
                panel = app.query_one(TrainingPanel).content_region
                for widget in (stats_line, app.query_one(LossChart), app.query_one(LiveSample),
                               app.query_one(EventLog)):
                    assert panel.contains_region(widget.region), (size, reason, widget)
                assert app.query_one(LossChart).size.height >= 4  # a plot row, axis, legend
                assert app.query_one(LiveSample).size.height >= 2
                assert app.query_one(EventLog).size.height >= 2


@pytest.mark.slow
@async_test
async def test_the_transcript_stays_on_the_newest_answer_when_the_window_shrinks(
        checkpoint: Path) -> None:
    app = ChargptApp(OpenCheckpoint(checkpoint), device="cpu", show_timing=False)
    async with app.run_test(size=(160, 50)) as pilot:
        await wait_until(pilot, lambda: app.live_model.ready, what="model")
        app.prompt.settings = PromptSettings(length=150, seed=1)
        for index in range(4):
            app.query_one(PromptInput).value = f"P{index}:"
            await pilot.press("enter")
            await wait_until(pilot, lambda: "chars" in app.query(TranscriptEntry).last().status,
                             what=f"answer {index}")
        transcript = app.query_one(Transcript)
        newest = app.query(TranscriptEntry).last()
        for size in ((100, 30), (80, 24), (60, 20), (120, 40)):
            await pilot.resize_terminal(*size)
            await pilot.pause()
            top, height = transcript.scroll_y, transcript.scrollable_content_region.height
            assert top <= newest.virtual_region.y < top + height, size  # its prompt line

        transcript.scroll_home(animate=False)  # reading the oldest answer: a resize keeps it
        await pilot.pause()
        await pilot.resize_terminal(80, 24)
        await pilot.pause()
        assert transcript.scroll_y == 0
