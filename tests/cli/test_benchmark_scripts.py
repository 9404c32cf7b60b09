"""The scripts in benchmarks/: each still imports against the engine, and the arithmetic they
report is right. (app_at_gpu_pace has its own test file: it drives the app in tmux.)"""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
from beam_repeat_guard import repetition
from recipe_ablation import ABLATIONS, variant_settings

from chargpt_tui.control import HOLD_WAIT_SECONDS
from chargpt_tui.presets import RECIPES
from chargpt_tui.run_setup import prepare_run
from chargpt_tui.train import Trainer
from tests.conftest import TINY

BENCHMARKS = Path(__file__).parents[2] / "benchmarks"
SCRIPTS = sorted(path.stem for path in BENCHMARKS.glob("*.py")
                 if path.stem != "tmux_terminal")


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_script_imports_and_has_a_main(name: str) -> None:
    script = importlib.import_module(name)
    assert callable(script.main)
    assert script.__doc__, f"{name} says what it measures and how to run it"


def test_each_ablation_turns_one_part_of_the_fast_recipe_back_to_the_lectures() -> None:
    for name, change in ABLATIONS.items():
        assert len(change) == 1, name
        (field, value), = change.items()
        assert RECIPES["fast"][field] != value == RECIPES["lecture"][field], name
    assert variant_settings("fast-no-muon") == {"recipe": "fast", "optimizer": "adamw"}
    assert variant_settings("lecture+batch_size=24") == {"recipe": "lecture", "batch_size": 24}


def test_repetition_counts_distinct_words_word_runs_and_repeated_windows() -> None:
    assert repetition("in in in the end") == (pytest.approx(3 / 5), 3, 0.0)
    # 23 characters: 12 windows of 12, and from the fourth on each repeats one 3 back.
    assert repetition("in in in in in in in in") == (1 / 8, 8, pytest.approx(9 / 12))
    assert repetition("abcdefghijklmnopq") == (1.0, 1, 0.0)  # one word, no window seen twice


def test_budget_minute_counts_only_the_training_state() -> None:
    from budget_minute import training_seconds

    events = [{"event": "StateChanged", "state": "evaluating", "time": 0.0},
              {"event": "StateChanged", "state": "training", "time": 1.0},
              {"event": "StepDone", "time": 5.0},
              {"event": "StateChanged", "state": "evaluating", "time": 11.0},
              {"event": "StateChanged", "state": "training", "time": 12.5},
              {"event": "StateChanged", "state": "training", "time": 13.0},  # said again
              {"event": "StateChanged", "state": "finished", "time": 20.5}]
    assert training_seconds(events) == 18.0


def test_prompt_cut_in_times_every_hold_while_the_trainer_steps(corpus_file: Path,
                                                                 tmp_path: Path) -> None:
    from prompt_cut_in import waits_for_holds

    setup = prepare_run(data=str(corpus_file), preset="tiny", out=tmp_path / "run",
                        overrides={**TINY, "max_iters": 10**6}, device="cpu")
    trainer = Trainer(setup)
    waits = waits_for_holds(trainer, holds=3, step_seconds=0.01)
    assert len(waits) == 3 and all(0 <= wait < HOLD_WAIT_SECONDS for wait in waits)
    assert trainer.step > 0  # it trained between the holds
    assert all(not block._forward_pre_hooks for block in trainer.model.blocks)  # and let go
