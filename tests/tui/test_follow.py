"""``--follow``: the app watches a run it does not own, through the run's metrics.jsonl."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from tiny_model import tiny_config
from tui_support import async_test, press_quickly, tiny_factory, wait_until, write_data

from chargpt_tui.checkpoint import FORMAT_VERSION, load_checkpoint, save_checkpoint
from chargpt_tui.model import GPTLanguageModel
from chargpt_tui.runs import CHECKPOINT_NAME
from chargpt_tui.train import Trainer
from chargpt_tui.tui import live_model
from chargpt_tui.tui.app import ChargptApp
from chargpt_tui.tui.live_model import CheckpointFollower, ModelSource
from chargpt_tui.tui.sources import FollowRun
from chargpt_tui.tui.widgets.event_log import EventLog
from chargpt_tui.tui.widgets.live_sample import LiveSample
from chargpt_tui.tui.widgets.next_chars import NextChars
from chargpt_tui.tui.widgets.prompt_input import PromptInput
from chargpt_tui.tui.widgets.transcript import TranscriptEntry

SIZE = (100, 30)
VOCAB = "\n abcdefghijk"  # 13 characters: tiny_config's vocabulary size


@pytest.fixture(autouse=True)
def no_downloads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHARGPT_TUI_CACHE", str(tmp_path / "cache"))


def log_text(app: ChargptApp) -> str:
    return "\n".join(app.query_one(EventLog).entries)


def save_step(run: Path, step: int) -> None:
    """What a run elsewhere does when it saves: a whole new ckpt.pt, swapped in atomically.
    Nothing is logged to metrics.jsonl, so no event can announce it."""
    torch.manual_seed(step)
    config = tiny_config()
    save_checkpoint({"format_version": FORMAT_VERSION, "model_config": config.to_dict(),
                     "vocab": VOCAB, "model": GPTLanguageModel(config).state_dict(),
                     "step": step}, run / CHECKPOINT_NAME)


def tear(run: Path) -> None:
    """Swap garbage in for the checkpoint (a foreign writer, a damaged copy)."""
    garbage = run / ".garbage.tmp"
    garbage.write_bytes(b"not a checkpoint " * 64)
    os.replace(garbage, run / CHECKPOINT_NAME)


@pytest.fixture
def loads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The steps the follow loader loaded, in order."""
    steps: list[int] = []
    real = live_model.load_for_sampling

    def counting(*args: Any, **kwargs: Any) -> Any:
        loaded = real(*args, **kwargs)
        steps.append(loaded.step)
        return loaded

    monkeypatch.setattr(live_model, "load_for_sampling", counting)
    return steps


async def ask(pilot: Any, app: ChargptApp, text: str = "bad") -> TranscriptEntry:
    """Submit a prompt and wait until its answer (or its error) is complete."""
    before = len(app.query(TranscriptEntry))
    app.prompt.settings = replace(app.prompt.settings, length=8, seed=1)
    app.query_one(PromptInput).value = text
    await press_quickly(pilot, "enter", "\r")
    await wait_until(pilot, lambda: len(app.query(TranscriptEntry)) == before + 1
                     and not app.prompt.generating, what="the answer")
    return app.query(TranscriptEntry).last()


def loaded_step(app: ChargptApp) -> int | None:
    snapshot = app.live_model.snapshot()
    return None if snapshot is None else snapshot.step


def test_the_follow_loader_loads_each_new_file_once(tmp_path: Path, loads: list[int]) -> None:
    source = ModelSource()
    follower = CheckpointFollower(source, tmp_path / CHECKPOINT_NAME, "cpu")
    missing = follower.refresh()
    assert missing.loaded is None and "no checkpoint" in str(missing.problem)
    assert not source.ready
    save_step(tmp_path, 10)
    assert follower.refresh().loaded == 10
    again = follower.refresh()  # the same file: a stat, no load
    assert again.loaded is None and again.problem is None and not again.new
    assert loads == [10]
    tear(tmp_path)
    torn = follower.refresh()
    assert torn.loaded is None and torn.new and "damaged" in str(torn.problem)
    assert follower.refresh() == replace(torn, new=False)  # not tried again
    snapshot = source.snapshot()
    assert snapshot is not None and snapshot.step == 10  # the loaded weights stay
    (tmp_path / CHECKPOINT_NAME).unlink()
    gone = follower.refresh()
    assert gone.new and "is gone" in str(gone.problem)
    save_step(tmp_path, 20)
    assert follower.refresh().loaded == 20
    assert loads == [10, 20]


@contextlib.asynccontextmanager
async def following_step_10(tmp_path: Path) -> AsyncIterator[tuple[Path, ChargptApp, Any]]:
    """The app following a run folder whose only checkpoint (step 10) it has loaded."""
    run = tmp_path / "run"
    run.mkdir()
    save_step(run, 10)
    app = ChargptApp(FollowRun(run), device="cpu")
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: loaded_step(app) == 10, what="step 10 loaded")
        yield run, app, pilot


@async_test
async def test_a_prompt_answers_from_the_newest_checkpoint_on_disk(tmp_path: Path,
                                                                   loads: list[int]) -> None:
    async with following_step_10(tmp_path) as (run, app, pilot):
        save_step(run, 20)  # no metrics.jsonl at all: only the prompt can notice this
        await pilot.pause(0.1)
        assert loaded_step(app) == 10
        entry = await ask(pilot, app)
        assert "step 20 snapshot" in entry.status and "8 chars" in entry.status, entry.status
        assert entry.warnings == [] and len(entry.answer) == 8
        assert loaded_step(app) == 20
        # The rest of the app moves on with it: the next-character view shows step 20.
        await wait_until(pilot, lambda: app.query_one(NextChars).step == 20,
                         what="the next-character view at step 20")
        # Nothing new on disk: the next prompt does not load the file again.
        entry = await ask(pilot, app)
        assert "step 20 snapshot" in entry.status, entry.status
        assert loads == [10, 20]


@pytest.mark.slow
@async_test
async def test_a_torn_checkpoint_at_submit_time_answers_from_the_loaded_one(
        tmp_path: Path) -> None:
    async with following_step_10(tmp_path) as (run, app, pilot):
        tear(run)
        entry = await ask(pilot, app)
        assert "step 10 snapshot" in entry.status and "8 chars" in entry.status, entry.status
        assert len(entry.answer) == 8
        assert len(entry.warnings) == 1, entry.warnings
        warning = entry.warnings[0]
        assert "could not be loaded" in warning and "damaged" in warning
        assert "answered from step 10" in warning
        assert f"⚠ {warning}" in entry.render_entry().plain  # shown on the entry itself
        assert "Traceback" not in entry.render_entry().plain
        # The run saves again: the next prompt takes it, without a warning.
        save_step(run, 30)
        entry = await ask(pilot, app)
        assert "step 30 snapshot" in entry.status and entry.warnings == [], entry.status


@async_test
async def test_a_prompt_loads_a_checkpoint_saved_after_the_app_opened(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    app = ChargptApp(FollowRun(run), device="cpu")
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: "no checkpoint" in str(app.prompt.border_subtitle),
                         what="the prompt pane to say there is no checkpoint yet")
        entry = await ask(pilot, app)
        assert "no checkpoint" in entry.status and entry.answer == "", entry.status
        save_step(run, 15)
        entry = await ask(pilot, app)
        assert "step 15 snapshot" in entry.status and "8 chars" in entry.status, entry.status
        assert loaded_step(app) == 15
        await wait_until(pilot, lambda: app.prompt.border_subtitle == "",
                         what="the 'no checkpoint' note to go")


@pytest.mark.slow
@async_test
async def test_follows_a_headless_run_while_it_trains(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    # A real headless run on its own thread: the app only sees the files it writes.
    trainer = Trainer(tiny_factory(write_data(tmp_path), out, eval_interval=20)(None, None))
    training = threading.Thread(target=trainer.run, name="headless run")
    app = ChargptApp(FollowRun(out), device="cpu")
    async with app.run_test(size=SIZE) as pilot:
        stats = app.training.query_one("#stats")
        await wait_until(pilot, lambda: "no checkpoint" in str(app.prompt.border_subtitle),
                         what="the prompt pane to say there is no checkpoint yet")
        assert app.training.stats.state == "following"
        assert "logged no live samples" in app.query_one(LiveSample).render_line(0).text
        training.start()
        try:
            await wait_until(pilot, lambda: app.training.stats.step >= 5, what="first steps")
            first = app.training.stats.step
            await wait_until(pilot, lambda: app.training.stats.step > first + 20,
                             what="the step counter to advance")
            assert f"step {app.training.stats.step}/100000" in str(stats.render())
            await wait_until(pilot, lambda: "step 20: train" in log_text(app), what="eval line")
            assert app.training.stats.state == "following"
            assert app.training.stats.detail.startswith(("run training", "run evaluating"))

            # Nothing to pause or save here: the keys are hidden and do nothing.
            assert app.check_action("pause", ()) is False
            assert app.check_action("save", ()) is False
            await press_quickly(pilot, "ctrl+t")
            await pilot.pause(0.2)
            assert not trainer.control.paused and app.training.stats.state == "following"

            # Prompts are answered from the run's checkpoint once it has saved one.
            await wait_until(pilot, lambda: app.live_model.ready, what="the run's checkpoint")
            assert app.prompt.border_subtitle == ""
            app.prompt.settings = replace(app.prompt.settings, length=20, seed=1)
            app.query_one(PromptInput).value = "ROMEO:"
            await press_quickly(pilot, "enter", "\r")
            await wait_until(pilot, lambda: len(app.query(TranscriptEntry)) == 1, what="prompt")
            entry = app.query(TranscriptEntry).last()
            await wait_until(pilot, lambda: "chars" in entry.status, what="an answer")
            assert len(entry.answer) == 20 and "snapshot" in entry.status
        finally:
            trainer.control.stop("test over")
            training.join(timeout=30)
        files = sorted(path.name for path in out.iterdir())
        modified = {path.name: path.stat().st_mtime_ns for path in out.iterdir()}
        await wait_until(pilot, lambda: "run stopped" in app.training.stats.detail,
                         what="the run's stop")
        await pilot.press("ctrl+q")
        await wait_until(pilot, lambda: not app.is_running, what="exit")
    assert app.return_code == 0
    # Quitting left the followed run alone: same files, untouched, checkpoint loadable.
    assert sorted(path.name for path in out.iterdir()) == files
    assert {path.name: path.stat().st_mtime_ns for path in out.iterdir()} == modified
    assert load_checkpoint(out / "ckpt.pt")["step"] == trainer.step


@pytest.mark.slow  # a fresh interpreter (a missing folder: tests/cli/test_tui_errors.py)
def test_follow_with_data_gives_one_line(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "chargpt_tui", "--follow", str(tmp_path), "--data", "play.txt"],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "CHARGPT_TUI_FORCE_TUI": "1"})  # past the "needs a terminal" check
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "leave out --data" in lines[0] and "--follow" in lines[0], \
        done.stderr
