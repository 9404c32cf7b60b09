"""``chargpt-tui sweep``: the grid, a failed point that does not stop the sweep, the leaderboard
and sweep.json, and Ctrl+C in the middle (real processes: every point is one)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers_robust import assert_one_line_error, invoke, write_text
from tiny_runs import subprocess_env

from chargpt_tui.checkpoint import load_checkpoint
from chargpt_tui.errors import ConfigError
from chargpt_tui.sweep import Sweep, expand_grid, parse_axis, point_name

TINY_POINT = ["--preset", "tiny", "--max-iters", "4", "--eval-iters", "1", "--device", "cpu",
              "--threads", "1"]


def test_the_grid_is_every_combination_first_axis_slowest() -> None:
    axes = {"learning_rate": parse_axis("learning_rate", "1e-3, 3e-3"),
            "n_embd": parse_axis("n_embd", "32,64,128")}
    grid = expand_grid(axes)
    assert len(grid) == 6
    assert grid[0] == {"learning_rate": "1e-3", "n_embd": "32"}
    assert grid[2] == {"learning_rate": "1e-3", "n_embd": "128"}
    assert grid[3] == {"learning_rate": "3e-3", "n_embd": "32"}
    assert len({point_name(p) for p in grid}) == 6
    assert point_name(grid[5]) == "lr=3e-3_embd=128"
    assert expand_grid({"dropout": ["0.1"]}) == [{"dropout": "0.1"}]


def test_each_point_is_the_train_command_with_its_settings(tmp_path: Path) -> None:
    sweep = Sweep({"batch_size": ["8", "16"], "block_size": ["32"]}, ["--preset", "tiny"],
                  out_dir=tmp_path / "sw")
    first = sweep.points[0]
    assert first.run_dir == str(tmp_path / "sw" / "batch=8")  # block 32 is every point's
    assert first.command[2:] == ["chargpt_tui", "train", "--json", "--out", first.run_dir,
                                 "--preset", "tiny", "--batch-size", "8", "--block-size", "32"]


@pytest.mark.parametrize(("option", "text", "needle"), [
    ("n_embd", "32,abc", "'abc' is not an integer"),
    ("learning_rate", "1e-3,x", "'x' is not a number"),
    ("batch_size", " , ", "has no values"),
    ("dropout", "0.1,0.1", "lists a value twice"),
])
def test_bad_lists_are_refused(option: str, text: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        parse_axis(option, text)


def test_a_bad_list_is_one_line_before_anything_runs(tmp_path: Path) -> None:
    result = invoke("sweep", "--n-embd", "32,big", "--out", str(tmp_path / "sw"))
    assert_one_line_error(result, "--n-embd: 'big' is not an integer")
    assert not (tmp_path / "sw").exists()


@pytest.mark.slow
def test_a_failed_point_is_reported_and_the_sweep_goes_on(tmp_path: Path) -> None:
    out = tmp_path / "sw"
    # n-embd 15 is not divisible by the tiny preset's 2 heads: that point fails at once
    result = invoke("sweep", "--n-embd", "15,16", "--learning-rate", "3e-3", "--data",
                    str(write_text(tmp_path)), "--out", str(out), "--json", *TINY_POINT)
    assert result.exit_code == 0, result.stderr
    record = json.loads(result.stdout)
    failed, finished = record["points"]
    assert failed["state"] == "failed" and "not divisible by n-head 2" in failed["error"]
    assert finished["state"] == "finished" and finished["step"] == 4
    assert finished["best_val_loss"] > 0 and finished["parameters"] > 0
    assert finished["tokens_per_second"] > 0
    assert record["leaderboard"] == [finished["name"]]
    assert load_checkpoint(finished["run_dir"])["step"] == 4  # a normal run folder
    assert json.loads((out / "sweep.json").read_text()) == record
    listed = json.loads(invoke("runs", str(out), "--json").stdout)
    assert [run["name"] for run in listed] == ["embd=16"]


@pytest.mark.slow
def test_ctrl_c_mid_sweep_keeps_finished_points_and_says_where_it_stopped(tmp_path: Path
                                                                          ) -> None:
    out = tmp_path / "sw"
    command = [sys.executable, "-m", "chargpt_tui", "sweep", "--data", str(write_text(tmp_path)),
               "--out", str(out), "--learning-rate", "3e-3,1e-3,2e-3", *TINY_POINT]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=subprocess_env(tmp_path / "cache"))

    def states() -> list[str]:
        try:
            return [p["state"] for p in json.loads((out / "sweep.json").read_text())["points"]]
        except (OSError, ValueError):
            return []

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and states()[1:2] != ["training"]:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)  # the first point finished, the second is under way
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    flat = " ".join(stdout.split())
    assert "stopped: received SIGINT; points not started: lr=2e-3" in flat, stdout
    record = json.loads((out / "sweep.json").read_text())
    first, second, third = record["points"]
    assert first["state"] == "finished"
    assert load_checkpoint(first["run_dir"])["step"] == 4  # intact
    assert second["state"] == "stopped", second
    assert third["state"] == "pending" and not Path(third["run_dir"]).exists()
    assert record["stopped"]["not_started"] == ["lr=2e-3"]


@pytest.mark.slow
def test_parallel_on_a_cpu_says_why_it_runs_points_in_turn(tmp_path: Path) -> None:
    # two points that fail at once (n-embd not divisible by the tiny preset's 2 heads)
    result = invoke("sweep", "--n-embd", "15,17", "--parallel", "2", "--out",
                    str(tmp_path / "sw"), *TINY_POINT)
    flat = " ".join(result.stderr.split())
    assert "--parallel 2 is for a GPU" in flat and "one after another" in flat
    assert "2 of 2 points failed" in flat
    assert result.exit_code == 1  # every point failed
    record = json.loads((tmp_path / "sw" / "sweep.json").read_text())
    assert record["parallel"] == 1 and record["leaderboard"] == []
