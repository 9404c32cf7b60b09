"""The app-at-GPU-pace benchmark: its arithmetic, its reading of the screen, and one tiny run
of the whole script (the installed ``chargpt-tui`` in tmux, headless then app)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from app_at_gpu_pace import FIRST_CHAR, WARM_UP_STEPS, pauses, prompt_pane_text, steady_pace
from tui_support import write_data

SCRIPT = Path(__file__).parents[2] / "benchmarks" / "app_at_gpu_pace.py"


def steps(times: list[float], first: int = WARM_UP_STEPS + 1) -> list[dict[str, object]]:
    return [{"event": "StepDone", "step": first + i, "time": t} for i, t in enumerate(times)]


def test_steady_pace_leaves_out_steps_touching_a_pause_or_a_prompt() -> None:
    # Ten steps a second, then one step stretched to 1.1 s by a prompt, then ten a second.
    times = [0.0, 0.1, 0.2, 0.3, 1.4, 1.5, 1.6]
    assert steady_pace(steps(times), []) == pytest.approx(6 / 1.6)
    assert steady_pace(steps(times), [(0.5, 1.0)]) == pytest.approx(5 / 0.5)  # left out
    # Steps before the warm-up's end never count; nor do gaps in the step numbers.
    early = steps([0.0, 5.0], first=1)
    assert steady_pace(early + steps([10.0, 10.1]), []) == pytest.approx(1 / 0.1)


def test_pauses_pair_the_runs_own_state_changes() -> None:
    records = [{"event": "StateChanged", "state": "training", "time": 0.0},
               {"event": "StateChanged", "state": "paused", "time": 2.0},
               {"event": "StateChanged", "state": "training", "time": 3.5},
               {"event": "StateChanged", "state": "finished", "time": 9.0}]
    assert pauses(records) == [(2.0, 3.5)]


def test_the_prompt_panel_is_read_across_its_wrapped_lines() -> None:
    left = "│ training · step 254/2500                     │"
    screen = "\n".join([
        f"{left}│ › ROMEO A: and so forth                      │",
        f"{left}│ step 250 snapshot · 200 chars · first char   │",
        f"{left}│ 23 ms                                        │",
    ])
    pane = prompt_pane_text(screen)
    assert "training" not in pane  # the left panel is not read
    match = FIRST_CHAR.search(pane, pane.rfind("› ROMEO A:"))
    assert match is not None and match.group(1) == "23"


@pytest.mark.slow  # two trainings in tmux: minutes
def test_the_script_drives_the_app_and_the_headless_run_in_tmux(tmp_path: Path) -> None:
    data = write_data(tmp_path)
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--preset", "tiny",
         "--data", str(data), "--device", "cpu", "--rounds", "1", "--prompts", "1",
         "--prompt-every", "0.5", "--timeout", "240", "--option=--max-iters",
         "--option=400", "--option=--eval-interval", "--option=200"],
        capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[:3000]
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    header, headless, app, summary = lines
    assert header["preset"] == "tiny" and header["machine"]["torch"]
    assert [headless["kind"], app["kind"]] == ["headless", "app"]
    assert headless["exit_code"] == app["exit_code"] == 0
    assert headless["steps"] == app["steps"] == 400
    assert app["prompts"] == 1 and len(app["first_char_ms"]) == 1 and app["unread"] == 0
    assert app["paused_s"] > 0.5  # the pause it made shows in the run's own metrics
    assert headless["steps_per_s"] > 0 and app["steps_per_s"] > 0
    # Same seed, same data: the prompts and the pause change nothing in what was learned.
    assert app["final_val"] == headless["final_val"]
    assert any("chargpt-tui sample" in line for line in app["last_words"])
    assert summary["summary"]["exit_codes"] == [0, 0]
