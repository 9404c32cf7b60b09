"""``--follow``: the app watches a run it does not own, through the run's metrics.jsonl."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from dataclasses import replace
from pathlib import Path

import pytest
from tui_support import async_test, press_quickly, tiny_factory, wait_until, write_data

from chargpt_tui.checkpoint import load_checkpoint
from chargpt_tui.train import Trainer
from chargpt_tui.tui.app import ChargptApp
from chargpt_tui.tui.widgets.event_log import EventLog
from chargpt_tui.tui.widgets.live_sample import LiveSample
from chargpt_tui.tui.widgets.prompt_input import PromptInput
from chargpt_tui.tui.widgets.transcript import TranscriptEntry

SIZE = (100, 30)


@pytest.fixture(autouse=True)
def no_downloads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHARGPT_TUI_CACHE", str(tmp_path / "cache"))


def log_text(app: ChargptApp) -> str:
    return "\n".join(app.query_one(EventLog).entries)


@async_test
async def test_follows_a_headless_run_while_it_trains(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    # A real headless run on its own thread: the app only sees the files it writes.
    trainer = Trainer(tiny_factory(write_data(tmp_path), out, eval_interval=20)(None, None))
    training = threading.Thread(target=trainer.run, name="headless run")
    app = ChargptApp(follow=out, device="cpu")
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
            assert "run training" in app.training.stats.detail

            # Nothing to pause or save here: the keys are dimmed and do nothing.
            assert app.check_action("pause", ()) is None
            assert app.check_action("save", ()) is None
            await press_quickly(pilot, "ctrl+t")
            await pilot.pause(0.2)
            assert not trainer.control.paused and app.training.stats.state == "following"

            # Prompts are answered from the run's checkpoint once it has saved one.
            await wait_until(pilot, lambda: app.source.ready, what="the run's checkpoint")
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


@pytest.mark.parametrize(("extra", "expected"), [
    ([], "no such run folder"),
    (["--data", "play.txt"], "leave out --data"),
], ids=["missing-folder", "with-data"])
def test_bad_follow_options_give_one_line(tmp_path: Path, extra: list[str],
                                          expected: str) -> None:
    folder = tmp_path / ("missing" if not extra else "")
    done = subprocess.run(
        [sys.executable, "-m", "chargpt_tui", "--follow", str(folder), *extra],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "CHARGPT_TUI_FORCE_TUI": "1"})  # past the "needs a terminal" check
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0] and "--follow" in lines[0], done.stderr
