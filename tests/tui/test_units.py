"""Unit tests of the TUI's pure parts: chart maths, formatting, settings, stylesheets."""

from __future__ import annotations

import pytest

from chargpt_tui.errors import ConfigError
from chargpt_tui.explain import shade_char
from chargpt_tui.tui.app import HERE, STYLESHEETS
from chargpt_tui.tui.formatting import count, duration, visible_char
from chargpt_tui.tui.prompt_settings import PromptSettings
from chargpt_tui.tui.widgets.loss_chart import bucket_means, line_dots
from chargpt_tui.tui.widgets.next_chars import bar
from chargpt_tui.tui.widgets.training_panel import thin


def test_bucket_means_average_rather_than_take_the_max() -> None:
    points = [(0, 1.0), (1, 3.0), (2, 10.0), (3, 2.0)]
    assert bucket_means(points, 0, 3, 2) == [2.0, 6.0]
    assert bucket_means(points, 0, 3, 8)[1] is None  # columns without steps stay empty


def test_line_dots_join_sparse_points_into_a_line() -> None:
    dots = set(line_dots([(0, 0.0), (4, 8.0)]))
    assert {x for x, _ in dots} == {0, 1, 2, 3, 4}
    assert {y for _, y in dots} == set(range(9))  # no vertical gaps


def test_thin_halves_a_history_by_averaging_neighbours() -> None:
    assert thin(((0, 1.0), (1, 3.0), (2, 5.0), (3, 7.0))) == ((1, 2.0), (3, 6.0))


def test_formatting() -> None:
    assert duration(75) == "1:15" and duration(3725) == "1:02:05" and duration(None) == "–"
    assert count(25_400) == "25.4k" and count(10_650_000) == "10.65M" and count(12) == "12"
    assert visible_char("\n") == "⏎" and visible_char(" ") == "␣" and visible_char("a") == "a"
    assert bar(1.0) == "█████" and bar(0.0) == "     " and bar(0.5).startswith("██▌")
    assert shade_char(0.9) == "█" and shade_char(0.0) == " "


def test_prompt_settings_map_to_engine_parameters() -> None:
    settings = PromptSettings(beam_width=3, no_repeat_ngram=5)
    assert settings.params().beam_width == 1 and settings.params().no_repeat_ngram == 0
    beam = settings.toggled()
    assert beam.mode == "beam" and beam.params().beam_width == 3
    assert beam.params().no_repeat_ngram == 5
    assert "beam" in beam.describe() and "T 0.8" in settings.describe()
    with pytest.raises(ConfigError):
        PromptSettings(top_p=1.5).params()


def test_every_stylesheet_is_loaded_and_exists() -> None:
    shipped = {p.relative_to(HERE).as_posix() for p in HERE.rglob("*.tcss")}
    assert shipped == set(STYLESHEETS)


def test_thread_per_task_runs_each_task_on_a_thread_that_ends_with_it() -> None:
    import threading

    from chargpt_tui.device import ThreadPerTask

    executor = ThreadPerTask("test")
    threads = [executor.submit(threading.current_thread).result(timeout=10) for _ in range(3)]
    assert len({id(thread) for thread in threads}) == 3  # a new thread each time
    assert threading.current_thread() not in threads
    for thread in threads:
        thread.join(10)
        assert not thread.is_alive()  # ended with its task (its OpenMP team with it)
    failing = executor.submit(lambda: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        failing.result(timeout=10)
    release = threading.Event()
    slow = executor.submit(lambda: release.wait(10) and "done")
    threading.Timer(0.2, release.set).start()
    executor.shutdown(wait=True)  # waits for the task still running
    assert slow.done() and slow.result() == "done"
    with pytest.raises(RuntimeError):
        executor.submit(lambda: None)


def test_the_stats_line_shows_a_budget_clock_and_an_evaluations_progress() -> None:
    from chargpt_tui.tui.widgets.stats_line import Stats, StatsLine

    line = StatsLine()
    line.stats = Stats(state="training", step=3, max_iters=None, steps_estimated=True,
                       elapsed=42.0, budget=300.0)
    text = " · ".join(part.plain for part in line.parts())
    assert "step 3/~?" in text and "elapsed 0:42 / 5:00" in text
    line.stats = Stats(state="evaluating", step=250, max_iters=900, steps_estimated=True,
                       elapsed=61.0, budget=300.0, evaluated="12/40 batches")
    text = " · ".join(part.plain for part in line.parts())
    assert text.startswith("evaluating 12/40 batches") and "step 250/~900" in text
    line.stats = Stats(state="training", step=260, max_iters=2000, elapsed=61.0,
                       evaluated="40/40 batches")  # no budget: a plain elapsed time
    text = " · ".join(part.plain for part in line.parts())
    assert text.startswith("training ·") and "elapsed 1:01 ·" in text and "/ " not in text
