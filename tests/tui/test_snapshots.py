"""Snapshot tests of deterministic states (fixed seeds, finished work, no wall-clock figures).

Baselines live in tests/tui/__snapshots__/; regenerate with ``pytest --snapshot-update`` and look at
the SVGs before committing them.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from textual.pilot import Pilot
from tui_support import tiny_factory, train_tiny_checkpoint, wait_until, write_data

from chargpt_tui.tui.app import ChargptApp
from chargpt_tui.tui.prompt_settings import PromptSettings
from chargpt_tui.tui.sources import FollowRun, OpenCheckpoint, TrainNew
from chargpt_tui.tui.widgets.live_sample import LiveSample
from chargpt_tui.tui.widgets.next_chars import NextChars
from chargpt_tui.tui.widgets.prompt_input import PromptInput
from chargpt_tui.tui.widgets.stats_line import StatsLine
from chargpt_tui.tui.widgets.transcript import Transcript, TranscriptEntry


@pytest.fixture(scope="module")
def trained(checkpoint: Path) -> Path:
    return checkpoint


@pytest.fixture
def in_run_folder(trained: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Work next to the checkpoint so paths on screen are short and the same on every run."""
    root = trained.parent.parent
    monkeypatch.chdir(root)
    monkeypatch.setenv("CHARGPT_TUI_CACHE", str(root / "cache"))
    return trained.relative_to(root)


def chat_app(checkpoint: Path) -> ChargptApp:
    return ChargptApp(OpenCheckpoint(checkpoint), device="cpu", show_timing=False)


async def settle_chat(pilot: Pilot) -> None:
    app = pilot.app
    await wait_until(pilot, lambda: app.training.stats.state == "chat only", what="checkpoint")
    await wait_until(pilot, lambda: bool(app.query_one(NextChars).candidates), what="next chars")
    app.query_one(PromptInput).cursor_blink = False  # after the run's states: a steady cursor


async def hold_cursor_after_training(pilot: Pilot) -> None:
    """A steady, visible cursor once the app has taken in the end of training: the stats line
    says "finished" before the app's own handler lets the prompt's cursor blink again, and a
    cursor switched off before that blinks on (a snapshot then catches it on or off)."""
    prompt_input = pilot.app.query_one(PromptInput)
    await wait_until(pilot, lambda: prompt_input.cursor_blink, what="the cursor to blink again")
    prompt_input.cursor_blink = False


async def answer_prompt(pilot: Pilot, text: str) -> None:
    app = pilot.app
    await pilot.press(*text, "enter")
    await wait_until(pilot, lambda: "chars" in app.query(TranscriptEntry).last().status,
                     what="answer")
    await wait_until(pilot, lambda: "last prompt" in app.view_texts, what="view text")


@pytest.mark.slow
def test_chat_only_app(snap_compare, in_run_folder: Path) -> None:
    async def run_before(pilot: Pilot) -> None:
        await settle_chat(pilot)
        pilot.app.prompt.settings = PromptSettings(seed=3, length=60)
        await answer_prompt(pilot, "ROMEO:")
        await pilot.press(*"KI")  # the next-character view follows the typed text
        await wait_until(pilot, lambda: pilot.app.query_one(NextChars).candidates
                         and pilot.app.prompt.query_one(PromptInput).value == "KI", what="KI")
        await pilot.pause(0.5)

    assert snap_compare(chat_app(in_run_folder), terminal_size=(100, 30), run_before=run_before)


@pytest.mark.slow
def test_beam_answer_at_80x24(snap_compare, in_run_folder: Path) -> None:
    """Beam search with its default repeat guard, the transcript maximised (F6) to show the
    beams' lines, cut to the width."""
    async def run_before(pilot: Pilot) -> None:
        await settle_chat(pilot)
        pilot.app.prompt.settings = PromptSettings(mode="beam", beam_width=3, length=40)
        await answer_prompt(pilot, "ROMEO:")
        pilot.app.query_one(Transcript).focus()
        await pilot.press("f6")
        await pilot.pause(0.3)

    assert snap_compare(chat_app(in_run_folder), terminal_size=(80, 24), run_before=run_before)


@pytest.mark.parametrize("size", [(120, 40), (80, 24)], ids=["120x40", "80x24"])
def test_help_screen(snap_compare, in_run_folder: Path, size: tuple[int, int]) -> None:
    async def run_before(pilot: Pilot) -> None:
        await settle_chat(pilot)
        await pilot.press("f1")

    assert snap_compare(chat_app(in_run_folder), terminal_size=size, run_before=run_before)


@pytest.mark.slow
def test_attention_view(snap_compare, in_run_folder: Path) -> None:
    async def run_before(pilot: Pilot) -> None:
        await settle_chat(pilot)
        pilot.app.prompt.settings = PromptSettings(seed=3, length=20)  # the view shows the answer
        await answer_prompt(pilot, "JULIET: thou art")
        await pilot.press("f4")
        await wait_until(pilot, lambda: getattr(pilot.app.screen, "result", None) is not None,
                         what="the attention view")
        await pilot.press("left", "left", "down")  # the third-last character, head 2

    assert snap_compare(chat_app(in_run_folder), terminal_size=(100, 30), run_before=run_before)


@pytest.mark.slow
@pytest.mark.parametrize("size", [(120, 40), (100, 30), (80, 24)],
                         ids=["120x40", "100x30", "80x24"])
def test_finished_run(snap_compare, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                      size: tuple[int, int]) -> None:
    app = thirty_step_app(tmp_path, monkeypatch)

    async def run_before(pilot: Pilot) -> None:
        await run_to_the_end(pilot, app)
        await hold_cursor_after_training(pilot)
        await pilot.pause(0.3)

    assert snap_compare(app, terminal_size=size, run_before=run_before)


def thirty_step_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ChargptApp:
    """The app training a tiny model for 30 steps, with paths relative to ``tmp_path``."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CHARGPT_TUI_CACHE", str(tmp_path / "cache"))
    write_data(tmp_path)
    return ChargptApp(TrainNew(tiny_factory(Path("play.txt"), "run", max_iters=30)),
                      device="cpu", show_timing=False)


async def run_to_the_end(pilot: Pilot, app: ChargptApp) -> None:
    """Until the run has finished and its last live sample is in."""
    await wait_until(pilot, lambda: app.training.stats.state == "finished", what="finish")
    sample = app.query_one(LiveSample)
    await wait_until(pilot, lambda: sample.step == 30 and sample.done, what="last sample")


@pytest.mark.slow
def test_finished_run_with_a_reason_at_80x24(snap_compare, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The end of a run that says why it ended (a time budget, an early stop): its stats line
    takes a third line at 80 columns, and the chart gives up a row for it; the live sample
    and the log stay. (A time-budgeted run ends at a different step each time, so this one
    ends at max_iters and is then given a budget's reason, as the stats line would show it.)"""
    app = thirty_step_app(tmp_path, monkeypatch)

    async def run_before(pilot: Pilot) -> None:
        await run_to_the_end(pilot, app)
        stats_line = app.query_one(StatsLine)
        stats_line.stats = replace(stats_line.stats, detail="time budget of 5m used")
        await hold_cursor_after_training(pilot)
        await pilot.pause(0.3)

    assert snap_compare(app, terminal_size=(80, 24), run_before=run_before)


@pytest.fixture(scope="module")
def run_with_samples(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished tiny run whose log holds live samples, as a headless run with them on."""
    return train_tiny_checkpoint(tmp_path_factory.mktemp("follow"), sample_interval=10,
                                 sample_chars=80).parent


def test_following_a_finished_run(snap_compare, run_with_samples: Path,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(run_with_samples.parent)
    app = ChargptApp(FollowRun(Path(run_with_samples.name)), device="cpu", show_timing=False)

    async def run_before(pilot: Pilot) -> None:
        await wait_until(pilot, lambda: "run finished" in app.training.stats.detail,
                         what="the whole log")
        sample = app.query_one(LiveSample)
        await wait_until(pilot, lambda: sample.step == 30 and sample.done, what="last sample")
        await wait_until(pilot, lambda: app.query_one(NextChars).step == 30, what="checkpoint")
        app.query_one(PromptInput).cursor_blink = False
        await pilot.pause(0.5)

    assert snap_compare(app, terminal_size=(100, 30), run_before=run_before)
