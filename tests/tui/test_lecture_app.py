"""``chargpt-tui --lecture``: the lecture's rungs trained live in the app, rung after rung.

Tiny caps keep the rungs to a few steps (the lecture's are 3000 and 5000); one test holds a rung
at the lecture's length to prompt it and quit in the middle of it.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot
from tui_support import async_test, wait_until, write_data

from chargpt_tui.checkpoint import load_checkpoint
from chargpt_tui.errors import UserError
from chargpt_tui.explain import TextAttention, attention_over
from chargpt_tui.lecture import MultiHeadModel, OneHeadModel, build_model, rung_named
from chargpt_tui.tokenizer import CharTokenizer
from chargpt_tui.tui import messages
from chargpt_tui.tui.app import ChargptApp
from chargpt_tui.tui.launch import resolve_lecture
from chargpt_tui.tui.screens.attention import AttentionScreen
from chargpt_tui.tui.screens.embeddings import EmbeddingsScreen
from chargpt_tui.tui.screens.explain_base import ExplainScreen
from chargpt_tui.tui.screens.model_view import ModelViewScreen
from chargpt_tui.tui.screens.surprise import SurpriseScreen
from chargpt_tui.tui.widgets.event_log import EventLog
from chargpt_tui.tui.widgets.ladder_panel import LadderPanel
from chargpt_tui.tui.widgets.live_sample import LiveSample
from chargpt_tui.tui.widgets.loss_chart import LossChart
from chargpt_tui.tui.widgets.prompt_input import PromptInput
from chargpt_tui.tui.widgets.transcript import TranscriptEntry

SIZE = (120, 40)


def lecture_app(folder: Path, through: str = "multi-head",
                max_iters: int | dict[str, int] = 3, **options: Any) -> ChargptApp:
    """The app replaying the lecture's rungs ``through`` one, on tiny local text, each capped
    at ``max_iters`` steps (a mapping: the named rungs only). Paths relative to ``folder``."""
    write_data(folder)
    source = resolve_lecture(through=through, data="play.txt", encoding="utf-8", device="cpu",
                             out=Path("ladder"), seed=1337, time_budget=None,
                             scaled_budget=None, max_iters=max_iters, eval_iters=2,
                             threads=None)
    return ChargptApp(source, device="cpu", **options)


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def states(app: ChargptApp) -> list[tuple[str, str]]:
    return [(row.name, row.state) for row in app.query_one(LadderPanel).rows]


async def finish_ladder(pilot: Pilot) -> None:
    app = pilot.app
    await wait_until(pilot, lambda: all(row.state == "finished" for row in
                                        app.query_one(LadderPanel).rows), what="every rung")
    await wait_until(pilot, lambda: app.training.stats.state == "finished"
                     and not app.session.running, what="the end of the ladder")


@async_test
async def test_each_finished_rung_fills_its_row_its_curve_and_its_sample(in_tmp: Path) -> None:
    app = lecture_app(in_tmp)
    async with app.run_test(size=SIZE) as pilot:
        await finish_ladder(pilot)
        rows = app.query_one(LadderPanel).rows
        assert [row.name for row in rows] == ["bigram", "one-head", "multi-head"]
        assert [row.lecture for row in rows] == [2.49, 2.40, 2.28]
        assert all(row.val is not None and row.val > 0 for row in rows)
        panel = app.query_one(LadderPanel)
        table = panel.render()
        assert table.row_count == 3  # type: ignore[union-attr]  # a table at 120×40
        assert panel.size.height == 4 and app.query_one(LossChart).size.height >= 10
        chart = app.query_one(LossChart)
        assert [name for name, _ in chart.rung_curves] == ["bigram", "one-head", "multi-head"]
        for (_, curve), row in zip(chart.rung_curves, rows):
            assert curve and curve[-1] == (3, pytest.approx(row.val))  # its last evaluation
        legend = chart.legend().plain
        assert all(f"◇ {name}" in legend for name, _ in chart.rung_curves)
        # The live sample follows the rungs: each one's samples, then its 200 characters.
        texts = [text.plain for text in app.query_one(LiveSample).texts]
        finished = [text for text in texts if " finished · val " in text]
        assert [text.split(" ")[0] for text in finished] == ["bigram", "one-head", "multi-head"]
        assert all(len(text.split(" ▸ ", 1)[1]) == 200 for text in finished)
        assert any(text.startswith("one-head · step ") for text in texts)
        ladder = app.session.ladder  # type: ignore[attr-defined]
        assert [r.rung for r in ladder.results] == ["bigram", "one-head", "multi-head"]
        # Prompts answer from the last rung's weights once the ladder is done.
        snapshot = app.live_model.snapshot()
        assert snapshot is not None and isinstance(snapshot.model, MultiHeadModel)
    farewell = "\n".join(app.farewell())
    assert "chargpt-tui runs ladder" in farewell and "--compare ladder" in farewell
    assert "multi-head" in farewell and "stopped" not in farewell


@async_test
async def test_a_prompt_answers_from_the_rung_in_training_and_quitting_keeps_finished_rungs(
        in_tmp: Path) -> None:
    # The bigram takes 3 steps; one-head trains at the lecture's length until the app quits.
    app = lecture_app(in_tmp, max_iters={"bigram": 3})
    async with app.run_test(size=SIZE) as pilot:
        panel = app.query_one(LadderPanel)
        await wait_until(pilot, lambda: states(app)[1][1] == "training",
                         what="one-head training")
        assert states(app) == [("bigram", "finished"), ("one-head", "training"),
                               ("multi-head", "waiting")]
        assert panel.rows[0].val is not None
        assert app.query_one(LossChart).rung_curves[0][0] == "bigram"
        await wait_until(pilot, lambda: panel.rows[1].val is not None,
                         what="one-head's first evaluation in its row")
        # Ctrl+T pauses the rung in training (its 5000 steps would not wait for the test on a
        # busy machine).
        await pilot.press("ctrl+t")
        await wait_until(pilot, lambda: app.training.stats.state == "paused", what="pause")
        assert app.session.trainer is not None and app.session.trainer.setup.rung == "one-head"
        app.prompt.settings = replace(app.prompt.settings, length=12, seed=1)
        app.query_one(PromptInput).value = "KING:"
        await pilot.press("enter")
        await wait_until(pilot, lambda: "chars" in app.query(TranscriptEntry).last().status,
                         what="an answer")
        answer = app.query(TranscriptEntry).last()
        assert answer.prompt == "KING:" and len(answer.answer) == 12
        snapshot = app.live_model.snapshot()
        assert snapshot is not None and isinstance(snapshot.model, OneHeadModel)
        # Every view opens on the rung in training: one layer of one head here.
        for key, kind in (("f4", AttentionScreen), ("f7", ModelViewScreen),
                          ("f8", SurpriseScreen), ("f9", EmbeddingsScreen)):
            await pilot.press(key)
            view = app.screen
            assert isinstance(view, kind)
            await wait_until(pilot, lambda: view.result is not None  # noqa: B023
                             and "(live)" in view.status, what=f"the {key} view")  # noqa: B023
            if isinstance(view.result, TextAttention):
                assert (view.result.n_layer, view.result.n_head) == (1, 1)
            await pilot.press(key)  # the same key closes it
            assert not isinstance(app.screen, ExplainScreen)
        await pilot.press("ctrl+q")
        await wait_until(pilot, lambda: not app.is_running, what="the app to quit")
    assert app.return_code == 0
    ladder = in_tmp / "ladder"
    assert load_checkpoint(ladder / "bigram")["step"] == 3  # the finished rung, intact
    stopped_at = load_checkpoint(ladder / "one-head")["step"]  # saved where it stopped
    assert stopped_at < 5000  # (paused after its first evaluation: a step or two in)
    assert not (ladder / "multi-head").exists()
    farewell = "\n".join(app.farewell())
    assert f"stopped during one-head at step {stopped_at}" in farewell
    assert "Finished rungs: bigram." in farewell
    assert "chargpt-tui --compare ladder" in farewell


def test_the_attention_views_say_the_bigram_has_no_attention() -> None:
    """F4 and F7 on the first rung: a line in the view's title, not a crash."""
    tokenizer = CharTokenizer.from_text("abc")
    bigram = build_model(rung_named("bigram").model_config(tokenizer.vocab_size), "bigram")
    with pytest.raises(UserError, match="no attention"):
        attention_over(bigram, tokenizer, [0, 1, 2])  # type: ignore[arg-type]


@async_test
async def test_the_ladder_packs_its_rungs_on_a_short_terminal(in_tmp: Path) -> None:
    app = lecture_app(in_tmp, through="one-head")
    async with app.run_test(size=(80, 24)) as pilot:
        await finish_ladder(pilot)
        await pilot.pause(0.1)
        panel = app.query_one(LadderPanel)
        assert panel.compact and panel.size.height == 1
        # It takes the log's place: the chart and the live sample keep their rows.
        assert not app.query_one(EventLog).display
        assert app.query_one(LossChart).size.height >= 5
        assert app.query_one(LiveSample).size.height == 3
        line = panel.packed_lines(panel.size.width)[0].plain
        bigram, one_head = panel.rows
        assert line.startswith("val/lecture bigram ")
        assert f"bigram {bigram.val:.2f}/2.49" in line
        assert f"one-head {one_head.val:.2f}/2.40" in line


@pytest.mark.slow
def test_a_finished_ladder_at_80x24(snap_compare, in_tmp: Path) -> None:  # type: ignore[no-untyped-def]
    """Three rungs done: their vals packed beside the lecture's in two lines above the chart,
    their curves named in the legend, the last rung's 200 characters in the live sample."""
    app = lecture_app(in_tmp, show_timing=False)

    async def run_before(pilot: Pilot) -> None:
        await finish_ladder(pilot)
        sample = app.query_one(LiveSample)
        await wait_until(pilot, lambda: sample.texts[-1].plain.startswith("multi-head finished"),
                         what="the last rung's sample")
        prompt_input = app.query_one(PromptInput)
        await wait_until(pilot, lambda: prompt_input.cursor_blink, what="the cursor to blink")
        prompt_input.cursor_blink = False  # a steady cursor for the picture
        await pilot.pause(0.5)

    assert snap_compare(app, terminal_size=(80, 24), run_before=run_before)


@async_test
async def test_a_rungs_measured_cost_is_said_before_it_trains(in_tmp: Path) -> None:
    """The scaled rung on a CPU: its cost, measured first, in a notification (the log is
    hidden at 80×24) and in the log. (Posted here as the session posts it: measuring the real
    scaled rung takes seconds.)"""
    app = lecture_app(in_tmp, through="bigram")
    async with app.run_test(size=(80, 24)) as pilot:
        await finish_ladder(pilot)
        cost = "scaled on this CPU: 1.23 s a step, so the lecture's 5,000 steps would take 1h43m"
        app.training.post_message(messages.RungStarted("bigram", 0, 1, cost))
        await wait_until(pilot, lambda: any(cost in n.message for n in app._notifications),
                         what="the notification")
        assert cost in "\n".join(app.query_one(EventLog).entries)
        assert app.training.border_title == "lecture · bigram (1/1)"
