"""The views of what the model learned (F4 attention, F7 all heads, F8 surprise, F9 embeddings):
Pilot tests of their keys against the engine's numbers, and snapshots at 80×24 and 120×40.

Each screen is hosted alone on a fixed tiny model (fixed seed, a few steps on generated text,
a weights history of five steps), so the pictures are the same on every run.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from rich.style import Style
from textual.app import App
from textual.pilot import Pilot
from tiny_model import open_model
from torch.nn import functional as F
from tui_support import async_test, tiny_factory, train_tiny_checkpoint, wait_until, write_data

from chargpt_tui import history
from chargpt_tui.checkpoint import load_for_sampling
from chargpt_tui.explain import (
    SHADE_256,
    SHADE_CHARS,
    Surprise,
    attention_over,
    compare_label,
    embedding_projection,
    run_curves,
    shade_bounds,
    shade_level,
    surprise,
)
from chargpt_tui.tui.app import HERE, STYLESHEETS, ChargptApp
from chargpt_tui.tui.live_model import ModelSource
from chargpt_tui.tui.prompt_settings import PromptSettings
from chargpt_tui.tui.screens.attention import (
    AttentionScreen,
    AttentionText,
    attention_text,
    level_style,
    shade_legend,
)
from chargpt_tui.tui.screens.compare import CompareScreen
from chargpt_tui.tui.screens.embeddings import EmbeddingPlot, EmbeddingsScreen, scatter
from chargpt_tui.tui.screens.explain_base import ExplainScreen, ViewContext
from chargpt_tui.tui.screens.model_view import HeadGrid, ModelViewScreen
from chargpt_tui.tui.screens.surprise import (
    SurpriseScreen,
    SurpriseText,
    surprise_legend,
    surprise_text,
)
from chargpt_tui.tui.sources import OpenCheckpoint, TrainNew
from chargpt_tui.tui.widgets.live_sample import LiveSample
from chargpt_tui.tui.widgets.loss_chart import LossChart
from chargpt_tui.tui.widgets.next_chars import NextChars
from chargpt_tui.tui.widgets.prompt_input import PromptInput
from chargpt_tui.tui.widgets.transcript import TranscriptEntry

TEXT = "ROMEO:\nThou art my love, the night is sweet.\n\nJULIET:\nGood night!"
SIZES = pytest.mark.parametrize("size", [(80, 24), (120, 40)], ids=["80x24", "120x40"])


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two layers of two heads, block 32, 40 steps: history at steps 0, 10, 20, 30, 40."""
    checkpoint = train_tiny_checkpoint(tmp_path_factory.mktemp("views"), max_iters=40,
                                       n_layer=2, block_size=32)
    return checkpoint.parent


def context(run: Path) -> ViewContext:
    model, tokenizer = open_model(run)
    source = ModelSource()
    source.attach_model(model, tokenizer, 40)
    return ViewContext(source, run, {"last prompt": TEXT, "other": "KING:\nGood day."})


class ViewHost(App[None]):
    """One view on its own, with the app's stylesheets."""

    CSS_PATH = [HERE / name for name in STYLESHEETS]

    def __init__(self, screen: ExplainScreen[Any]) -> None:
        super().__init__()
        self.view = screen

    def on_mount(self) -> None:
        self.push_screen(self.view)


async def computed(pilot: Pilot, step: int | None = None, saved: bool = False,
                   timeout: float = 20.0) -> None:
    view = pilot.app.screen
    assert isinstance(view, ExplainScreen)
    kind = "(saved)" if saved else "(live)"
    await wait_until(pilot, lambda: view.result is not None and kind in view.status
                     and (step is None or view.step == step), timeout=timeout,
                     what=f"a view at step {step}")
    await pilot.pause()


# -- pure rendering ------------------------------------------------------------------------------


def test_attention_text_shades_match_the_weights() -> None:
    # A two-character text, the second selected: its row is the hand-picked [0.25, 0.75].
    shaded = attention_text("hi", [0.25, 0.75], cursor=1, width=10, shade_rows=True)
    assert shaded.plain == "hi\n▓█"
    coloured = attention_text("hi", [0.25, 0.75], cursor=1, width=10, shade_rows=False)
    assert coloured.plain == "hi" and "color(" in str(coloured.get_style_at_offset(
        _console(), 0))
    # After the cursor nothing is shaded: the model has not seen it yet.
    assert attention_text("hiya", [1.0], cursor=0, width=10, shade_rows=True).plain == \
        "hiya\n█   "
    # Lines break at the width and after a newline (drawn as ⏎).
    assert attention_text("ab\ncdef", [0.2] * 6 + [0.0], 6, 3, False).plain == "ab⏎\ncde\nf"
    # The text before the context comes first, on the same lines, with nothing shaded under it.
    assert attention_text("ya", [0.5, 0.5], 1, 10, True, before="hi").plain == "hiya\n  ██"


def test_the_attention_legend_uses_the_texts_own_styles() -> None:
    console = _console()

    def styles(text: Any) -> list[str]:
        return [str(text.get_style_at_offset(console, i)) for i in range(len(text.plain))]

    # Colours: each swatch of the legend is styled as the text's characters of its level.
    legend = shade_legend(shade_rows=False, before=False)
    for level in (1, 5, len(SHADE_256) - 1):
        weight = shade_bounds(len(SHADE_256))[level - 1] * 1.01  # inside the level
        drawn = attention_text("ab", [1 - weight, weight], cursor=1, width=10,
                               shade_rows=False)
        assert str(drawn.get_style_at_offset(console, 0)) == str(Style.parse(
            level_style(shade_level(1 - weight, len(SHADE_256)))))
        assert str(Style.parse(level_style(level))) in styles(legend)
    # Shade characters: the legend's are yellow like the rows under the text.
    legend = shade_legend(shade_rows=True, before=True)
    for char in SHADE_CHARS[1:]:
        assert str(legend.get_style_at_offset(console, legend.plain.index(char))) == "yellow"
    # "Not seen yet" and "before the context" in the text's own styles, neither of them dim.
    after = attention_text("hiya", [1.0], cursor=0, width=10, shade_rows=False)
    cut = attention_text("ya", [0.5, 0.5], cursor=1, width=10, shade_rows=False,
                         before="hi")
    for drawn, offset, name in ((after, 2, "abc not seen yet"), (cut, 0, "abc out of")):
        style = drawn.get_style_at_offset(console, offset)
        assert not style.dim
        assert str(legend.get_style_at_offset(console, legend.plain.index(name))) == str(style)


def test_the_surprise_legend_uses_the_texts_own_colours() -> None:
    console = _console()
    scores = Surprise("abc", [None, 0.05, 9.0], [[], [], []], context=1)
    for colours_16 in (False, True):
        drawn = surprise_text(scores, vocab_size=13, cursor=-1, width=10, colours_16=colours_16)
        legend = surprise_legend(scores, 13, colours_16)
        legend_styles = {str(legend.get_style_at_offset(console, i))
                         for i in range(len(legend.plain))}
        sure, lost = (str(drawn.get_style_at_offset(console, i)) for i in (1, 2))
        assert sure != lost and {sure, lost} <= legend_styles  # the first and last colours
        assert not drawn.get_style_at_offset(console, 0).dim  # the unscored first character
    assert "≥ 2.6: uniform guess" in legend.plain  # ln 13


def _console() -> Any:
    from rich.console import Console

    return Console()


def test_scatter_draws_each_point_as_its_character() -> None:
    plot, hidden = scatter([(0.0, 0.0), (1.0, 1.0), (1.0, 0.0)], "aB!", width=5, height=3)
    assert plot.plain.split("\n") == ["    B", "     ", "a   !"] and hidden == 0
    crowded, hidden = scatter([(0.0, 0.0)] * 4 + [(1.0, 1.0)], "abcde", width=2, height=2)
    # Four points on one cell: it and its right neighbour take two, two stay hidden.
    assert hidden == 2 and crowded.plain.split("\n") == [" e", "ab"]


# -- Pilot: keys against the engine's numbers ------------------------------------------------------


@async_test
async def test_attention_view_keys(run: Path) -> None:
    app = ViewHost(AttentionScreen(context(run)))
    async with app.run_test(size=(80, 24)) as pilot:
        await computed(pilot, 40)
        view = app.screen
        assert isinstance(view, AttentionScreen)
        model, tokenizer = open_model(run)
        expected = attention_over(model, tokenizer, tokenizer.encode(TEXT))
        shown = view.query_one(AttentionText)
        assert shown.chars == TEXT[-32:] and shown.cursor == 31
        # The text is longer than the model's context (32): its start stays in view.
        assert shown.before == TEXT[:-32] and "ROMEO:" in str(shown.render())
        assert "context: last 32 of" in str(view.query_one("#attention-detail").render())
        await pilot.press("left", "left")
        assert shown.cursor == 29
        assert shown.row == pytest.approx(expected.row(0, 0, 29))
        assert sum(shown.row) == pytest.approx(1.0)
        await pilot.press("down")  # head 2, then the mean of the layer's heads
        assert shown.row == pytest.approx(expected.row(0, 1, 29))
        await pilot.press("down", "pagedown")
        assert view.head_index is None and view.layer_index == 1
        assert shown.row == pytest.approx(expected.row(1, None, 29))
        assert "layer 2/2 · mean of heads" in view.describe()
        await pilot.press("left_square_bracket")  # the newest saved weights
        await computed(pilot, 40, saved=True)
        await pilot.press("left_square_bracket")
        await computed(pilot, 30, saved=True)
        older, _ = history.load_step(run, 30)
        assert shown.row == pytest.approx(attention_over(older, tokenizer, tokenizer.encode(
            TEXT)).row(1, None, shown.cursor))
        await pilot.press("r")  # back to the live weights
        await computed(pilot, 40)
        await pilot.press("t")  # another text
        await computed(pilot, 40)
        assert shown.chars == "KING:\nGood day." and view.text_name == "other"


@pytest.mark.slow
@async_test
async def test_model_view_opens_the_selected_head(run: Path) -> None:
    app = ViewHost(ModelViewScreen(context(run)))
    async with app.run_test(size=(80, 24)) as pilot:
        await computed(pilot, 40)
        grid = app.screen.query_one(HeadGrid)
        await pilot.press("right", "down", "down", "right")
        assert grid.selected == (0, 0)  # both wrap around
        await pilot.press("down", "right")
        assert grid.selected == (1, 1) and "L2 H2" in app.screen.describe()
        await pilot.press("enter")
        await computed(pilot, 40)
        opened = app.screen
        assert isinstance(opened, AttentionScreen)
        assert (opened.layer_index, opened.head_index) == (1, 1)
        assert len(app.screen_stack) == 2  # in place of the thumbnails, not on top of them
        await pilot.press("escape")
        assert not isinstance(app.screen, ExplainScreen)


@async_test
async def test_surprise_view_shows_the_engine_losses_and_guesses(run: Path) -> None:
    app = ViewHost(SurpriseScreen(context(run)))
    async with app.run_test(size=(80, 24)) as pilot:
        await computed(pilot, 40)
        model, tokenizer = open_model(run)
        expected = surprise(model, tokenizer, tokenizer.encode(TEXT))
        shown = app.screen.query_one(SurpriseText)
        assert shown.result is not None
        assert shown.result.nats[1:] == pytest.approx(expected.nats[1:])
        await pilot.press("home", "right")
        assert shown.cursor == 1
        detail = str(app.screen.query_one("#surprise-detail").render())
        assert f"{expected.nats[1]:.2f} nats" in detail
        assert all(f"{p:.0%}" in detail for _, p in expected.guesses[1])
        await pilot.press("home")
        assert "nothing before it" in str(app.screen.query_one("#surprise-detail").render())


@async_test
async def test_embedding_view_steps_through_saved_weights(run: Path) -> None:
    app = ViewHost(EmbeddingsScreen(context(run)))
    async with app.run_test(size=(80, 24)) as pilot:
        await computed(pilot, 40)
        plot = app.screen.query_one(EmbeddingPlot)
        model, _ = open_model(run)
        assert plot.projection is not None
        assert plot.projection.points.tolist() == embedding_projection(model).points.tolist()
        back, on = "left_square_bracket", "right_square_bracket"
        # [ goes back one saved step (from the live weights: to the newest), and stops at 0.
        for key, step in ((back, 40), (back, 30), (back, 20), (back, 10), (back, 0), (back, 0),
                          (on, 10)):
            shown = plot.projection.points
            await pilot.press(key)
            await computed(pilot, step, saved=True)
            weights, _ = history.load_step(run, step)
            expected = embedding_projection(weights, like=shown)
            assert plot.projection.points.tolist() == expected.points.tolist()
            # Oriented like the picture before: no axis mirrored (the largest-loading sign
            # alone flipped 5 axes over these steps).
            assert ((plot.projection.points * shown).sum(0) > 0).all(), step
        assert "variance shown" in app.screen.describe()


# -- the views in the app --------------------------------------------------------------------------


async def answer_a_prompt(pilot: Pilot, app: ChargptApp) -> None:
    """Once the checkpoint is open, type ROMEO: and wait for the whole answer."""
    await wait_until(pilot, lambda: app.training.stats.state == "chat only", what="model")
    await pilot.press(*"ROMEO:", "enter")
    await wait_until(pilot, lambda: "chars" in app.query(TranscriptEntry).last().status,
                     what="answer")


@pytest.mark.slow
@async_test
async def test_function_keys_open_each_view_on_the_last_prompt(run: Path,
                                                               monkeypatch: pytest.MonkeyPatch
                                                               ) -> None:
    monkeypatch.chdir(run.parent)
    app = ChargptApp(OpenCheckpoint(Path(run.name)), device="cpu", show_timing=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await answer_a_prompt(pilot, app)
        entry = app.query(TranscriptEntry).last()
        for key, kind in (("f4", AttentionScreen), ("f7", ModelViewScreen),
                          ("f8", SurpriseScreen), ("f9", EmbeddingsScreen)):
            await pilot.press(key)
            assert isinstance(app.screen, kind)
            await computed(pilot, 40)
            if kind is not EmbeddingsScreen:
                assert app.screen.text == entry.prompt + entry.answer
                assert app.screen.context.run_dir == Path(run.name)
            await pilot.press(key)  # the same key closes it
            assert not isinstance(app.screen, ExplainScreen)


@pytest.mark.slow
@async_test
async def test_views_replace_each_other_and_one_escape_goes_back(run: Path,
                                                                 monkeypatch: pytest.MonkeyPatch
                                                                 ) -> None:
    """F4 → F7 → Enter → F8 → F9 once stacked five views (five Escapes back, the ones below
    still saying "(live)" and computing); now each replaces the one before, with its text and
    weights."""
    monkeypatch.chdir(run.parent)
    app = ChargptApp(OpenCheckpoint(Path(run.name)), device="cpu", show_timing=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await answer_a_prompt(pilot, app)
        main = app.screen
        await pilot.press("f4")
        await computed(pilot, 40)
        await pilot.press("left_square_bracket")  # a saved step: the next views keep it
        await computed(pilot, 40, saved=True)
        replaced: list[ExplainScreen[Any]] = []
        for key, kind in (("f7", ModelViewScreen), ("enter", AttentionScreen),
                          ("f8", SurpriseScreen), ("f9", EmbeddingsScreen)):
            before = app.screen
            assert isinstance(before, ExplainScreen)
            replaced.append(before)
            await pilot.press(key)
            await computed(pilot, 40, saved=True)
            assert isinstance(app.screen, kind) and app.screen_stack == [main, app.screen]
            assert app.screen.text_name == "last prompt"
        await wait_until(pilot, lambda: not any(view.is_attached for view in replaced),
                         what="the replaced views to go")
        assert not [worker for worker in app.workers  # nothing left computing for them
                    if worker.node in replaced and worker.is_running]
        await pilot.press("escape")
        assert app.screen is main


@pytest.mark.slow
@async_test
async def test_chat_only_views_look_at_the_typed_text_and_t_says_why_not(
        run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With a checkpoint opened for chat only, no live sample ever comes: the views look at
    the text on the prompt line, say what to do when there is none, and t always answers."""
    monkeypatch.chdir(run.parent)
    app = ChargptApp(OpenCheckpoint(Path(run.name)), device="cpu", show_timing=False)

    def told() -> list[str]:
        return [notification.message for notification in app._notifications]

    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until(pilot, lambda: "validation" in app.view_texts, what="the val text")
        await pilot.press("f8")  # the run's validation text (its data file is here)
        await computed(pilot, 40)
        loaded = load_for_sampling(Path(run.name), "cpu")
        assert app.screen.text_name == "validation"
        assert app.screen.text == loaded.validation_excerpt()
        await pilot.press("t")
        assert any("only the validation to look at: type a prompt (Enter answers it)," in
                   message for message in told())
        await pilot.press("escape", *"JULIET:")  # typed, not sent
        await pilot.press("f8")
        await computed(pilot, 40)
        assert app.screen.text_name == "typed text" and app.screen.text == "JULIET:"
        await pilot.press("t")  # to the validation text
        await computed(pilot, 40)
        assert app.screen.text_name == "validation"
        await pilot.press("f9")
        await computed(pilot, 40)
        await pilot.press("t")
        assert any("does not depend on a text" in message for message in told())


@async_test
async def test_a_view_without_a_text_says_what_would_give_it_one(run: Path) -> None:
    no_samples = replace(context(run), texts={}, live_samples=False)
    app = ViewHost(AttentionScreen(no_samples))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        view = app.screen
        assert isinstance(view, AttentionScreen) and view.result is None
        assert view.status == "no text yet: type a prompt (Enter answers it), then open this " \
                              "view again"  # not "wait for a live sample": none will come
        await pilot.press("t")
        assert [n.message for n in app._notifications] == [
            "no text to look at: type a prompt (Enter answers it), then open this view again"]


@pytest.mark.slow
@async_test
async def test_a_view_while_training_takes_turns_with_it(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    write_data(tmp_path)
    holds: list[int] = []
    original = ModelSource.hold_training

    def counting(self: ModelSource) -> Any:
        holds.append(1)
        return original(self)

    monkeypatch.setattr(ModelSource, "hold_training", counting)
    app = ChargptApp(TrainNew(tiny_factory(Path("play.txt"), "run")), device="cpu",
                     show_timing=False)
    async with app.run_test(size=(80, 24)) as pilot:
        # Generous deadlines: a busy shared machine can take many seconds to start a run.
        await wait_until(pilot, lambda: app.training.stats.step >= 3, timeout=90,
                         what="training")
        await pilot.press("f8")  # no prompt yet: a live sample, or the validation text
        await computed(pilot, timeout=90)
        view = app.screen
        assert isinstance(view, SurpriseScreen) and view.text_name != "last prompt"
        assert len(view.context.texts["validation"]) == 2 * 16
        assert holds and app.session.trainer is not None
        step = app.session.trainer.step
        await wait_until(pilot, lambda: app.session.trainer.step > step + 2, timeout=90,
                         what="training to continue after the view")
        await pilot.press("escape")
        app.session.stop("test")
        await wait_until(pilot, lambda: not app.session.running, timeout=90, what="stop")


@async_test
async def test_views_keep_their_texts_and_run_folder_from_messages(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch
                                                                  ) -> None:
    """The app hands the views what the panels posted (ViewText, TrainingStarted): nothing
    reads another widget."""
    monkeypatch.chdir(tmp_path)
    write_data(tmp_path)
    app = ChargptApp(TrainNew(tiny_factory(Path("play.txt"), "run")), device="cpu",
                     show_timing=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until(pilot, lambda: "validation" in app.view_texts and app.run_dir
                         is not None, timeout=90, what="the trainer's text and folder")
        assert app.run_dir == app.session.trainer.out_dir  # type: ignore[union-attr]
        assert len(app.view_texts["validation"]) == 2 * 16
        app.view_texts["last prompt"] = "ROMEO: hello"
        context = app.view_context()
        assert list(context.texts) == ["last prompt", "validation"]  # most useful first
        assert context.run_dir == app.run_dir
        app.session.stop("test")
        await wait_until(pilot, lambda: not app.session.running, timeout=90, what="stop")


class SampleHost(App[None]):
    """A live sample alone, keeping the ViewText messages that reach the app."""

    def __init__(self) -> None:
        super().__init__()
        self.texts: list[tuple[str, str]] = []

    def compose(self) -> Any:
        yield LiveSample()

    def on_view_text(self, message: Any) -> None:
        self.texts.append((message.name, message.text))


@async_test
async def test_a_live_sample_is_handed_to_the_views_once_finished() -> None:
    app = SampleHost()
    async with app.run_test(size=(80, 24)) as pilot:
        sample = app.query_one(LiveSample)
        sample.start(7)
        sample.extend("ROMEO: half", False)  # still streaming: not a text to look at yet
        await pilot.pause(0.1)
        assert app.texts == []
        sample.extend(" done", True)
        await wait_until(pilot, lambda: bool(app.texts), what="the sample")
        assert app.texts == [("live sample", "ROMEO: half done")]


# -- the fast recipe (rotary positions, QK-norm, Muon) -----------------------------------------


@pytest.fixture(scope="module")
def fast_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    checkpoint = train_tiny_checkpoint(tmp_path_factory.mktemp("fast"), max_iters=20,
                                       recipe="fast", n_layer=2, block_size=16)
    return checkpoint.parent


@pytest.mark.slow
@async_test
async def test_views_on_a_fast_recipe_model_show_the_engines_numbers(
        fast_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(fast_run.parent)
    model, tokenizer = open_model(fast_run)
    assert model.config.rope and not hasattr(model, "position_embedding_table")
    app = ChargptApp(OpenCheckpoint(Path(fast_run.name)), device="cpu", show_timing=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until(pilot, lambda: app.training.stats.state == "chat only", what="model")
        app.prompt.settings = PromptSettings(seed=1, length=40)  # past the 16-char context
        await pilot.press(*"ROMEO:", "enter")
        await wait_until(pilot, lambda: "last prompt" in app.view_texts, what="answer")
        text = app.view_texts["last prompt"]
        ids = tokenizer.encode(text)
        assert len(ids) > 2 * model.config.block_size

        await pilot.press("f4")
        await computed(pilot)
        shown = app.screen.query_one(AttentionText)
        expected = attention_over(model, tokenizer, ids)
        await pilot.press("left", "down")
        assert shown.chars == text[-16:]
        assert shown.row == pytest.approx(expected.row(0, 1, shown.cursor))
        await pilot.press("f4")

        await pilot.press("f8")
        await computed(pilot)
        result = app.screen.query_one(SurpriseText).result
        assert result is not None
        # The rotary model's own definition past the context: one forward over the text.
        logits, _ = model(torch.tensor([ids[:-1]]))
        full = F.cross_entropy(logits[0], torch.tensor(ids[1:]), reduction="none")
        assert result.nats[1:] == pytest.approx(full.tolist(), abs=1e-4)
        assert result.nats[1:] == pytest.approx(surprise(model, tokenizer, ids).nats[1:])
        await pilot.press("f8")

        await pilot.press("f7")
        await computed(pilot)
        assert isinstance(app.screen, ModelViewScreen) and app.screen.result is not None
        assert all(torch.allclose(shown_maps, engine_maps, atol=1e-6) for shown_maps, engine_maps
                   in zip(app.screen.result.maps, expected.maps, strict=True))
        await pilot.press("f7", "f9")
        await computed(pilot)
        plot = app.screen.query_one(EmbeddingPlot)
        assert plot.projection is not None
        assert torch.allclose(plot.projection.points, embedding_projection(model).points,
                              atol=1e-6)


# -- runs compared ------------------------------------------------------------------------------


@async_test
async def test_comparing_a_run_with_itself_draws_two_identical_curves(
        run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(run.parent)
    app = ChargptApp(OpenCheckpoint(Path(run.name)), device="cpu", show_timing=False,
                     compare=[(compare_label(run), run_curves(run))])
    async with app.run_test(size=(120, 40)) as pilot:
        chart = app.query_one(LossChart)
        await wait_until(pilot, lambda: bool(chart.val_points), what="the run's history")
        assert chart.overlay_label == run.name
        assert chart.overlay_train == chart.train_points and len(chart.train_points) == 40
        assert chart.overlay_val == chart.val_points
        overlay_train, overlay_val, own_train, own_val = chart.curves(100, 40)[0]
        assert overlay_train.dots == own_train.dots and overlay_val.dots == own_val.dots
        assert overlay_val.markers == own_val.markers
        assert f"{run.name} train" in chart.legend().plain


@pytest.mark.slow
@async_test
async def test_f10_asks_for_a_run_and_lays_its_curves_over(run: Path,
                                                            monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    monkeypatch.chdir(run.parent)
    app = ChargptApp(OpenCheckpoint(Path(run.name)), device="cpu", show_timing=False)
    async with app.run_test(size=(80, 24)) as pilot:
        chart = app.query_one(LossChart)
        await wait_until(pilot, lambda: bool(chart.val_points), what="the run's history")
        assert not chart.overlay_label
        await pilot.press("f10")
        assert isinstance(app.screen, CompareScreen)
        await pilot.press(*"nowhere", "enter")  # a folder without a log: a notification
        await wait_until(pilot, lambda: any("no training log" in n.message
                                            for n in app._notifications), what="the error")
        assert not chart.overlay_label
        await pilot.press("f10")
        await pilot.press(*["backspace"] * 7, *run.name, "enter")
        await wait_until(pilot, lambda: bool(chart.overlay_label), what="the overlay")
        assert chart.overlay_val == tuple(run_curves(run).val) == chart.val_points
        await pilot.press("f10")
        await pilot.press(*["backspace"] * len(run.name), "enter")  # empty: no comparison
        await wait_until(pilot, lambda: not chart.overlay_label, what="the overlay removed")


# -- snapshots -------------------------------------------------------------------------------------


@SIZES
def test_attention_view_snapshot(snap_compare: Any, run: Path, size: tuple[int, int]) -> None:
    async def run_before(pilot: Pilot) -> None:
        await computed(pilot, 40)
        await pilot.press("left", "left", "left", "down", "pagedown")

    assert snap_compare(ViewHost(AttentionScreen(context(run))), terminal_size=size,
                        run_before=run_before)


@SIZES
def test_model_view_snapshot(snap_compare: Any, run: Path, size: tuple[int, int]) -> None:
    async def run_before(pilot: Pilot) -> None:
        await computed(pilot, 40)
        await pilot.press("down", "right")

    assert snap_compare(ViewHost(ModelViewScreen(context(run))), terminal_size=size,
                        run_before=run_before)


@SIZES
def test_surprise_view_snapshot(snap_compare: Any, run: Path, size: tuple[int, int]) -> None:
    async def run_before(pilot: Pilot) -> None:
        await computed(pilot, 40)
        await pilot.press("home", *["right"] * 8)

    assert snap_compare(ViewHost(SurpriseScreen(context(run))), terminal_size=size,
                        run_before=run_before)


@SIZES
def test_embeddings_view_snapshot(snap_compare: Any, run: Path, size: tuple[int, int]) -> None:
    async def run_before(pilot: Pilot) -> None:
        await computed(pilot, 40)
        await pilot.press("left_square_bracket", "left_square_bracket")
        await computed(pilot, 30, saved=True)

    assert snap_compare(ViewHost(EmbeddingsScreen(context(run))), terminal_size=size,
                        run_before=run_before)


@SIZES
def test_compared_run_snapshot(snap_compare: Any, run: Path, fast_run: Path,
                               monkeypatch: pytest.MonkeyPatch, size: tuple[int, int]) -> None:
    """The tiny run with the fast recipe's run laid over it (dotted, ◇ at its evaluations)."""
    monkeypatch.chdir(run.parent)
    app = ChargptApp(OpenCheckpoint(Path(run.name)), device="cpu", show_timing=False,
                     compare=[("fast recipe", run_curves(fast_run))])

    async def run_before(pilot: Pilot) -> None:
        await wait_until(pilot, lambda: pilot.app.training.stats.state == "chat only",
                         what="checkpoint")
        await wait_until(pilot, lambda: bool(pilot.app.query_one(NextChars).candidates),
                         what="next chars")
        pilot.app.query_one(PromptInput).cursor_blink = False
        await pilot.pause(0.3)

    assert snap_compare(app, terminal_size=size, run_before=run_before)
