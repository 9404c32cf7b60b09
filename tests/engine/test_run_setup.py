"""From options to a run: the commands suggested when a run ends fit the run and its data."""

from __future__ import annotations

from pathlib import Path

from chargpt_tui.run_setup import continue_command, sample_command, suggested_prompt
from chargpt_tui.train import TrainConfig


def test_the_suggested_prompt_fits_the_training_text() -> None:
    shakespeare = "\n !&',-.:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
    assert suggested_prompt("shakespeare", shakespeare) == "ROMEO:"
    assert suggested_prompt("python-stdlib", "def abc()") == "def "  # the offline fallback
    assert suggested_prompt("notes.txt", "abc") == ""  # unknown text: start from a newline
    assert suggested_prompt("shakespeare", "abc") == ""  # never a prompt it cannot encode
    assert sample_command(Path("runs/a b"), "python-stdlib", "def ") == (
        "chargpt-tui sample --checkpoint 'runs/a b' --prompt 'def '")


def test_the_continue_command_follows_the_resume_rules() -> None:
    folder = Path("runs/x")
    budgeted = TrainConfig(time_budget=300.0, max_iters=10**9)
    assert continue_command(folder, budgeted, 40, finished=False) == (
        "chargpt-tui train --resume runs/x --time-budget 5m")
    assert continue_command(folder, budgeted, 40, finished=True, app=True) == (
        "chargpt-tui --resume runs/x --time-budget 5m")
    stepped = TrainConfig(max_iters=300)
    assert continue_command(folder, stepped, 120, finished=False) == (
        "chargpt-tui train --resume runs/x")
    assert continue_command(folder, stepped, 300, finished=True) == (
        "chargpt-tui train --resume runs/x --max-iters 600")
