"""Pilot tests of what each source shows and allows: keys hidden where nothing trains, a failed
run said plainly (and a non-zero exit), the best weights named after a run, the farewell lines."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tui_support import async_test, tiny_factory, wait_until, write_data

from chargpt_tui.checkpoint import load_for_sampling
from chargpt_tui.tui.app import ChargptApp
from chargpt_tui.tui.screens.help import HELP_TEXT
from chargpt_tui.tui.sources import FollowRun, OpenCheckpoint, TrainNew
from chargpt_tui.tui.widgets.prompt_input import PromptInput
from chargpt_tui.tui.widgets.stats_line import StatsLine
from chargpt_tui.tui.widgets.transcript import TranscriptEntry

SIZE = (100, 30)
TRAINING_KEYS = {"ctrl+t", "ctrl+s"}


@pytest.fixture(autouse=True)
def no_downloads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHARGPT_TUI_CACHE", str(tmp_path / "cache"))


def footer_keys(app: ChargptApp) -> set[str]:
    return {key for key, active in app.screen.active_bindings.items()
            if active.binding.show and active.enabled}


@pytest.mark.parametrize("mode", ["checkpoint", "follow"])
@async_test
async def test_training_keys_are_hidden_where_nothing_trains(mode: str, checkpoint: Path) -> None:
    source = (OpenCheckpoint(checkpoint) if mode == "checkpoint"
              else FollowRun(checkpoint.parent))
    app = ChargptApp(source, device="cpu")
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.live_model.ready, what="model")
        assert not TRAINING_KEYS & set(app.screen.active_bindings)
        assert app.check_action("save", ()) is False
        await pilot.press("ctrl+q")
        await wait_until(pilot, lambda: not app.is_running, what="exit")
    assert "--checkpoint is for chat only" in HELP_TEXT and "--follow" in HELP_TEXT


@async_test
async def test_training_keys_show_while_training(tmp_path: Path) -> None:
    app = ChargptApp(TrainNew(tiny_factory(write_data(tmp_path), tmp_path / "run")),
                     device="cpu")
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.session.running, what="training")
        await wait_until(pilot, lambda: footer_keys(app) >= TRAINING_KEYS, what="keys")
        await pilot.press("ctrl+q")
        await wait_until(pilot, lambda: not app.is_running, what="exit")


@async_test
async def test_a_failed_run_says_so_in_the_prompt_pane_and_exits_1(tmp_path: Path) -> None:
    app = ChargptApp(TrainNew(tiny_factory(tmp_path / "missing.txt", tmp_path / "run")),
                     device="cpu")
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: "training failed" in str(app.prompt.border_subtitle),
                         what="the failure under the prompt")
        assert "data file not found" in str(app.prompt.border_subtitle)
        await pilot.press("ctrl+q")
        await wait_until(pilot, lambda: not app.is_running, what="exit")
    assert app.return_code == 1
    farewell = app.farewell()
    assert farewell[0].startswith("training failed: data file not found")
    assert farewell[-1] == "no checkpoint was saved"


@pytest.mark.slow
@async_test
async def test_after_a_run_prompts_answer_from_the_best_step(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from chargpt_tui import train

    # An overfitting run, scripted: val falls to step 10, then rises.
    curve = iter([3.0, 2.0, 2.5, 2.7])
    monkeypatch.setattr(train, "estimate_loss", lambda *a, **k: {"train": 1.0, "val": next(curve)})
    out = tmp_path / "run"
    app = ChargptApp(TrainNew(tiny_factory(write_data(tmp_path), out, max_iters=30,
                                           eval_interval=10)), device="cpu", show_timing=False)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.training.stats.state == "finished", what="the end")
        await wait_until(pilot, lambda: app.prompt.unavailable is None and not app.session.running,
                         what="the worker's end")
        stats = app.training.stats
        assert stats.best == "best val 2.00 @ step 10"
        assert stats.recipe == "lecture" and not stats.steps_estimated
        assert "best val 2.00 @ step 10" in app.query_one(StatsLine).render().plain
        app.query_one(PromptInput).value = "ab"
        await pilot.press("enter")
        entry = app.query(TranscriptEntry).last()
        await wait_until(pilot, lambda: "chars" in entry.status, what="the answer")
        assert entry.status.startswith("step 10 snapshot")
        # The weights prompts use are best.pt's, not the last step's.
        snapshot = app.live_model.snapshot()
        assert snapshot is not None and snapshot.step == 10
        best = load_for_sampling(out / "best.pt", "cpu")
        tokens = torch.tensor([[1, 2, 3, 4]])
        assert torch.allclose(snapshot.model(tokens)[0], best.model(tokens)[0], atol=1e-5)
        await pilot.press("ctrl+q")
        await wait_until(pilot, lambda: not app.is_running, what="exit")
    assert app.return_code == 0
    assert app.farewell() == [
        f"checkpoint: {out / 'ckpt.pt'} (step 30)",
        f"best weights: {out / 'best.pt'} (val 2.0000 from step 10)",
        # a prompt only for text it knows (this is a generated file), and a command that runs
        f"try: chargpt-tui sample --checkpoint {out}",
        f"train further: chargpt-tui --resume {out} --max-iters 60",
    ]


@async_test
async def test_a_time_budget_shows_its_step_count_as_an_estimate(tmp_path: Path) -> None:
    app = ChargptApp(TrainNew(tiny_factory(write_data(tmp_path), tmp_path / "run",
                                           time_budget=600.0)), device="cpu")
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.training.stats.step >= 3, what="steps")
        assert app.training.stats.steps_estimated
        assert "/~" in app.query_one(StatsLine).render().plain
        await pilot.press("ctrl+q")
        await wait_until(pilot, lambda: not app.is_running, what="exit")
