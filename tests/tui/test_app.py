"""Pilot tests of the app: training, pause/resume, prompting in both modes, save and quit."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from textual.pilot import Pilot
from textual.widgets import Select
from tui_support import (
    TINY,
    async_test,
    tiny_factory,
    wait_until,
    write_data,
)

from chargpt_tui.checkpoint import load_checkpoint
from chargpt_tui.events import EvalDone, StateChanged
from chargpt_tui.tui import messages
from chargpt_tui.tui.app import ChargptApp
from chargpt_tui.tui.sources import OpenCheckpoint, TrainNew
from chargpt_tui.tui.widgets import prompt_pane
from chargpt_tui.tui.widgets.event_log import EventLog
from chargpt_tui.tui.widgets.prompt_input import PromptInput
from chargpt_tui.tui.widgets.transcript import TranscriptEntry

SIZE = (100, 30)


@pytest.fixture(autouse=True)
def no_downloads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHARGPT_TUI_CACHE", str(tmp_path / "cache"))


def chat_app(checkpoint: Path) -> ChargptApp:
    return ChargptApp(OpenCheckpoint(checkpoint), device="cpu")


def make_app(tmp_path: Path, **overrides: object) -> ChargptApp:
    data = write_data(tmp_path)
    return ChargptApp(TrainNew(tiny_factory(data, tmp_path / "run", **overrides)),
                      device="cpu")


def current_step(app: ChargptApp) -> int:
    return app.training.stats.step


def log_text(app: ChargptApp) -> str:
    return "\n".join(app.query_one(EventLog).entries)


async def type_prompt(pilot: Pilot, text: str) -> None:
    """Fill the prompt and press Enter. (Each simulated key waits for the process to go idle,
    up to 1 s, which it never does while training: so text is set, only Enter is pressed.)"""
    pilot.app.query_one(PromptInput).value = text
    await pilot.press("enter")


@pytest.mark.slow
@async_test
async def test_training_advances_and_ctrl_t_pauses_and_resumes(tmp_path: Path) -> None:
    app = make_app(tmp_path, eval_interval=25)
    async with app.run_test(size=SIZE) as pilot:
        prompt_input = app.query_one(PromptInput)
        # Steady while training (a blink is a redraw). The state reaches the app as a message
        # that bubbles up from the panel, which may show a step or two before it arrives.
        await wait_until(pilot, lambda: current_step(app) >= 5 and not prompt_input.cursor_blink,
                         what="training steps with a steady cursor")
        assert app.focused is prompt_input
        await pilot.press("ctrl+t")
        await wait_until(pilot, lambda: app.training.stats.state == "paused", what="pause")
        assert prompt_input.cursor_blink
        await pilot.pause(0.3)  # a step in flight when pausing may still land
        paused_at = current_step(app)
        await pilot.pause(0.5)
        assert current_step(app) == paused_at
        assert app.session.trainer is not None and app.session.trainer.step == paused_at
        await pilot.press("ctrl+t")
        await wait_until(pilot, lambda: current_step(app) > paused_at + 3, what="resume")
        assert app.training.stats.state in ("training", "evaluating")  # not paused
        assert not prompt_input.cursor_blink
        app.query_one(EventLog).focus()
        await pilot.press("f5")
        await wait_until(pilot, lambda: app.training.stats.state == "paused", what="F5 pause")
        assert not prompt_input.cursor_blink  # unfocused: no blink timer to run
        prompt_input.focus()
        await pilot.pause()
        assert prompt_input.cursor_blink  # focused again while paused: it blinks


@pytest.mark.slow
@async_test
async def test_prompt_streams_a_continuation_in_both_modes(tmp_path: Path) -> None:
    app = make_app(tmp_path, eval_interval=25)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: current_step(app) >= 10, what="training")
        app.prompt.settings = replace(app.prompt.settings, length=40, seed=1)
        await type_prompt(pilot, "ROMEO:")
        entries = app.query(TranscriptEntry)
        await wait_until(pilot, lambda: "chars" in entries.last().status, what="sampled text")
        sampled = app.query(TranscriptEntry).last()
        assert sampled.prompt == "ROMEO:"
        assert len(sampled.answer) == 40
        assert "snapshot" in sampled.status and "stopped" not in sampled.status
        # the views look at the finished answer (the app keeps it from a ViewText message)
        await wait_until(pilot, lambda: "last prompt" in app.view_texts, what="view text")
        assert app.view_texts["last prompt"] == "ROMEO:" + sampled.answer
        await pilot.press("f3")  # beam search
        assert app.prompt.settings.mode == "beam"
        await type_prompt(pilot, "KING")
        await wait_until(pilot, lambda: len(app.query(TranscriptEntry)) == 2
                         and app.query(TranscriptEntry).last().beams is not None,
                         what="beam search result")
        beamed = app.query(TranscriptEntry).last()
        assert beamed.beams is not None
        assert len(beamed.beams.texts) == app.prompt.settings.beam_width
        assert beamed.beams.scores == sorted(beamed.beams.scores, reverse=True)
        assert beamed.answer == beamed.beams.texts[0] and len(beamed.answer) == 40
        # Training carried on after being held for the answers.
        held_at = current_step(app)
        await wait_until(pilot, lambda: current_step(app) > held_at, what="training again")


@pytest.mark.slow
@async_test
async def test_escape_stops_a_generation(checkpoint: Path) -> None:
    app = chat_app(checkpoint)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.live_model.ready, what="model")
        app.prompt.settings = replace(app.prompt.settings, length=1_000_000)
        await type_prompt(pilot, "QUEEN:")
        entry = app.query(TranscriptEntry).last()
        await wait_until(pilot, lambda: len(entry.answer) > 20, what="streamed text")
        await pilot.press("escape")
        await wait_until(pilot, lambda: "stopped" in entry.status, what="stop")
        assert 20 < len(entry.answer) < 1_000_000
        stopped_length = len(entry.answer)
        await pilot.pause(0.3)
        assert len(entry.answer) == stopped_length


@async_test
async def test_a_failing_sampler_ends_the_answer_and_the_prompt_works_again(
        checkpoint: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An unexpected error inside a worker (here a FloatingPointError from the sampler) is shown
    on the answer instead of leaving it "generating…" for good; the next prompt is answered."""
    from chargpt_tui.tui.widgets import prompt_pane

    real_stream_text = prompt_pane.stream_text

    def failing_stream_text(*args: object, **kwargs: object) -> Iterator[str]:
        yield "x"
        raise FloatingPointError("probabilities are nan")

    app = chat_app(checkpoint)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.live_model.ready, what="model")
        app.prompt.settings = replace(app.prompt.settings, length=5)
        monkeypatch.setattr(prompt_pane, "stream_text", failing_stream_text)
        await type_prompt(pilot, "KING:")
        failed = app.query(TranscriptEntry).last()
        await wait_until(pilot, lambda: not app.prompt.generating, what="the failed answer")
        assert "FloatingPointError" in failed.status and "generating" not in failed.status
        monkeypatch.setattr(prompt_pane, "stream_text", real_stream_text)
        await type_prompt(pilot, "QUEEN:")
        answered = app.query(TranscriptEntry).last()
        assert answered is not failed
        await wait_until(pilot, lambda: "5 chars" in answered.status, what="the next answer")


@async_test
async def test_the_first_character_is_drawn_at_once_and_its_delay_is_reported(
        checkpoint: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The pane's drain timer is switched off here: the first character can only reach the
    screen through the worker's nudge. The answer's status then says how long Enter waited."""
    monkeypatch.setattr(prompt_pane, "DRAIN_INTERVAL", 3600.0)
    release = threading.Event()

    def one_char_then_wait(*args: object, **kwargs: object) -> Iterator[str]:
        yield "x"
        release.wait(20)
        yield "y"

    monkeypatch.setattr(prompt_pane, "stream_text", one_char_then_wait)
    app = ChargptApp(OpenCheckpoint(checkpoint), device="cpu", show_timing=True)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.live_model.ready, what="model")
        await type_prompt(pilot, "KING:")
        entry = app.query(TranscriptEntry).last()
        await wait_until(pilot, lambda: entry.answer == "x", what="the first character")
        assert app.prompt.generating  # drawn while the worker is still inside the answer
        release.set()
        await wait_until(pilot, lambda: not app.prompt.generating, what="the end")
        assert entry.answer == "xy"
        assert re.search(r"first char \d+ ms", entry.status), entry.status


@async_test
async def test_up_and_down_recall_earlier_prompts(checkpoint: Path) -> None:
    app = chat_app(checkpoint)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.live_model.ready, what="model")
        app.prompt.settings = replace(app.prompt.settings, length=5)
        await type_prompt(pilot, "first")
        await type_prompt(pilot, "second")
        prompt_input = app.query_one(PromptInput)
        await pilot.press("x", "up")
        assert prompt_input.value == "second"
        await pilot.press("up")
        assert prompt_input.value == "first"
        await pilot.press("down", "down")
        assert prompt_input.value == "x"


@async_test
async def test_unknown_characters_are_reported(checkpoint: Path) -> None:
    app = chat_app(checkpoint)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.live_model.ready, what="model")
        app.prompt.settings = replace(app.prompt.settings, length=5)
        await type_prompt(pilot, "KING~")
        entry = app.query(TranscriptEntry).last()
        await wait_until(pilot, lambda: "chars" in entry.status, what="answer")
        assert any("~" in warning for warning in entry.warnings)


@pytest.mark.slow
@async_test
async def test_ctrl_s_writes_a_loadable_checkpoint_even_while_paused(tmp_path: Path) -> None:
    app = make_app(tmp_path, eval_interval=100_000)  # no eval saves: only ours
    ckpt = tmp_path / "run" / "ckpt.pt"
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: current_step(app) >= 3, what="training")
        await pilot.press("ctrl+t")
        await wait_until(pilot, lambda: app.training.stats.state == "paused", what="pause")
        assert not ckpt.exists()
        await pilot.press("ctrl+s")
        await wait_until(pilot, ckpt.exists, what="checkpoint")
        payload = load_checkpoint(ckpt)
        assert payload["step"] >= 3
        assert payload["model_config"]["n_embd"] == TINY["n_embd"]
        await wait_until(pilot, lambda: "requested" in log_text(app), what="log line")
        assert str(ckpt) in log_text(app)
        assert app.training.stats.state == "paused"


@async_test
async def test_ctrl_q_saves_and_exits(tmp_path: Path) -> None:
    app = make_app(tmp_path, eval_interval=100_000)
    ckpt = tmp_path / "run" / "ckpt.pt"
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: current_step(app) >= 3, what="training")
        await pilot.press("ctrl+q")
        await wait_until(pilot, lambda: not app.is_running, what="exit")
    assert app.return_code == 0
    payload = load_checkpoint(ckpt)
    assert payload["step"] >= 3


@async_test
async def test_bad_data_shows_one_line_in_the_log(tmp_path: Path) -> None:
    app = ChargptApp(TrainNew(tiny_factory(tmp_path / "missing.txt", tmp_path / "run")),
                     device="cpu")
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: "data file not found" in log_text(app), what="error")
        assert app.training.stats.state == "failed"
        await pilot.press("ctrl+q")
        await wait_until(pilot, lambda: not app.is_running, what="exit")


@async_test
async def test_messages_that_arrive_while_the_app_shuts_down_are_let_go(checkpoint: Path
                                                                          ) -> None:
    # Pilot takes the screens down while the app still reads its queue (CI once failed on a
    # replayed evaluation that refreshed a prompt pane whose input was already removed).
    app = chat_app(checkpoint)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.live_model.ready, what="the model")
        for step in range(100):  # queued now, most of them read during the shutdown
            for message in (messages.EngineEvent(EvalDone(step, 2.0, 2.0, 2.0, step)),
                            messages.EngineEvent(StateChanged("paused")),
                            messages.ModelReady(step, training=False),
                            messages.ModelUnavailable("gone"),
                            messages.TrainingEnded(None, "late"),
                            messages.CompareLoaded("other", None, "late")):
                app.post_message(message)
    # run_test re-raises whatever a handler raised


@async_test
async def test_chat_only_app_opens_a_checkpoint(checkpoint: Path) -> None:
    app = chat_app(checkpoint)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.training.stats.state == "chat only", what="open")
        assert app.training.stats.step == 30
        assert str(checkpoint) in log_text(app)
        await pilot.press("ctrl+t")  # nothing to pause: no crash, no state change
        assert app.training.stats.state == "chat only"
        await pilot.press("ctrl+q")
        await wait_until(pilot, lambda: not app.is_running, what="exit")
    assert app.return_code == 0


@pytest.mark.slow
@async_test
async def test_f2_edits_sampling_parameters_from_the_keyboard(checkpoint: Path) -> None:
    app = chat_app(checkpoint)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.live_model.ready, what="model")
        await pilot.press("f2")
        assert app.focused is not None and app.focused.id == "field-mode"
        # The mode is a list, not free text: Enter opens it, ↓ and Enter pick beam search.
        await pilot.press("enter", "down", "enter")
        assert app.screen.query_one("#field-mode", Select).value == "beam"
        await pilot.press("tab", "ctrl+u", "9", "enter")  # temperature 9 is allowed
        assert app.prompt.settings.temperature == 9.0
        assert app.prompt.settings.mode == "beam"
        await pilot.press("f2", "tab", "ctrl+u", *"hot", "enter")  # not a number: stays open
        assert "is not a number" in str(app.screen.query_one("#settings-error").render())
        await pilot.press("escape")
        assert app.prompt.settings.temperature == 9.0
        assert app.focused is app.query_one(PromptInput)


@async_test
async def test_next_character_view_shows_the_models_own_top_choices(checkpoint: Path) -> None:
    """As the user types, the bars show the live model's likeliest next characters."""
    import torch

    from chargpt_tui.checkpoint import load_for_sampling
    from chargpt_tui.tui.widgets.next_chars import NextChars

    loaded = load_for_sampling(checkpoint, "cpu")
    model, tokenizer = loaded.model, loaded.tokenizer
    app = chat_app(checkpoint)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.live_model.ready, what="model")
        view = app.query_one(NextChars)
        for typed in ("ROMEO:", "JULIET: O"):
            app.query_one(PromptInput).value = typed
            with torch.no_grad():
                logits, _ = model(torch.tensor([tokenizer.encode(typed)]))
            probs = torch.softmax(logits[0, -1], dim=-1)
            top = torch.topk(probs, 3)
            expected = [(tokenizer.vocab[int(i)], float(p))
                        for p, i in zip(top.values, top.indices)]
            await wait_until(pilot, lambda e=expected: [c for c, _ in view.candidates[:3]]
                             == [c for c, _ in e], what=f"next characters after {typed!r}")
            for (_, shown), (_, prob) in zip(view.candidates, expected):
                assert shown == pytest.approx(prob, abs=1e-4)


@async_test
async def test_each_answer_runs_on_a_thread_of_its_own_that_then_ends(
        checkpoint: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """torch gives every thread that computes its own OpenMP team; a pooled thread kept its
    team after answering and halved training's speed (worker_threads). So no worker thread
    outlives its work."""
    real_stream_text = prompt_pane.stream_text
    threads: list[threading.Thread] = []

    def recording_stream_text(*args: object, **kwargs: object) -> Iterator[str]:
        threads.append(threading.current_thread())
        yield from real_stream_text(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(prompt_pane, "stream_text", recording_stream_text)
    app = chat_app(checkpoint)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.live_model.ready, what="model")
        app.prompt.settings = replace(app.prompt.settings, length=5)
        for text in ("KING:", "QUEEN:"):
            await type_prompt(pilot, text)
            await wait_until(pilot, lambda: not app.prompt.generating, what="the answer")
        assert len(threads) == 2 and threads[0] is not threads[1]
        assert threading.main_thread() not in threads
        for thread in threads:
            thread.join(10)
            assert not thread.is_alive()
