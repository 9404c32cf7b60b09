"""The views of what the model learned (F4 attention, F7 all heads, F8 surprise, F9 embeddings):
Pilot tests of their keys against the engine's numbers, and snapshots at 80×24 and 120×40.

Each screen is hosted alone on a fixed tiny model (fixed seed, a few steps on generated text,
a weights history of five steps), so the pictures are the same on every run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from textual.app import App
from textual.pilot import Pilot
from tiny_model import open_model
from tui_support import async_test, tiny_factory, train_tiny_checkpoint, wait_until, write_data

from chargpt_tui import history
from chargpt_tui.explain import attention_over, embedding_projection, surprise
from chargpt_tui.tui.app import HERE, STYLESHEETS, ChargptApp
from chargpt_tui.tui.live_model import ModelSource
from chargpt_tui.tui.screens.attention import AttentionScreen, AttentionText, attention_text
from chargpt_tui.tui.screens.embeddings import EmbeddingPlot, EmbeddingsScreen, scatter
from chargpt_tui.tui.screens.explain_base import ExplainScreen, ViewContext
from chargpt_tui.tui.screens.model_view import HeadGrid, ModelViewScreen
from chargpt_tui.tui.screens.surprise import SurpriseScreen, SurpriseText
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
        await pilot.press("escape")
        assert isinstance(app.screen, ModelViewScreen)


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
        for step in (40, 30, 20, 10, 0, 0):  # [ goes back one saved step, and stops at 0
            await pilot.press("left_square_bracket")
            await computed(pilot, step, saved=True)
        first, _ = history.load_step(run, 0)
        assert plot.projection.points.tolist() == embedding_projection(first).points.tolist()
        await pilot.press("right_square_bracket")
        await computed(pilot, 10, saved=True)
        assert "variance shown" in app.screen.describe()


# -- the views in the app --------------------------------------------------------------------------


@async_test
async def test_function_keys_open_each_view_on_the_last_prompt(run: Path,
                                                               monkeypatch: pytest.MonkeyPatch
                                                               ) -> None:
    monkeypatch.chdir(run.parent)
    app = ChargptApp(checkpoint=Path(run.name), device="cpu", show_timing=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until(pilot, lambda: app.training.stats.state == "chat only", what="model")
        await pilot.press(*"ROMEO:", "enter")
        await wait_until(pilot, lambda: "chars" in app.query(TranscriptEntry).last().status,
                         what="answer")
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
    app = ChargptApp(setup_factory=tiny_factory(Path("play.txt"), "run"), device="cpu",
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
        assert holds and app.training.trainer is not None
        step = app.training.trainer.step
        await wait_until(pilot, lambda: app.training.trainer.step > step + 2, timeout=90,
                         what="training to continue after the view")
        await pilot.press("escape")
        app.training.stop("test")
        await wait_until(pilot, lambda: not app.training.running, timeout=90, what="stop")


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
