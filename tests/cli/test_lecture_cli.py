"""``chargpt-tui lecture`` as a user runs it: the table, JSON, the rung folders the other
commands open, bad input, and Ctrl+C in the middle of the ladder (a real process)."""

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

QUICK = ["--max-iters", "3", "--eval-iters", "1", "--device", "cpu"]


@pytest.fixture(scope="module")
def ladder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:  # type: ignore[type-arg]
    root = tmp_path_factory.mktemp("lecture")
    result = invoke("lecture", "--data", str(write_text(root)), "--through", "multi-head",
                    "--out", str(root / "ladder"), "--json", *QUICK)
    assert result.exit_code == 0, result.stderr
    return root / "ladder", json.loads(result.stdout)


def test_json_has_one_row_per_rung_with_the_lectures_numbers(ladder: tuple[Path, dict]  # type: ignore[type-arg]
                                                             ) -> None:
    folder, table = ladder
    rows = table["rungs"]
    assert [row["rung"] for row in rows] == ["bigram", "one-head", "multi-head"]
    assert [row["lecture_val_loss"] for row in rows] == [2.49, 2.40, 2.28]
    for row in rows:
        assert {"rung", "val_loss", "lecture_val_loss", "parameters", "steps", "seconds",
                "run_dir"} <= row.keys()
        assert row["steps"] == 3 and row["val_loss"] > 0 and row["parameters"] > 0
        assert Path(row["run_dir"]) == folder / row["rung"]
    assert table["stopped"] is None
    assert json.loads((folder / "ladder.json").read_text()) == table


def test_every_rung_is_a_run_that_runs_sample_and_explain_open(ladder: tuple[Path, dict]  # type: ignore[type-arg]
                                                               ) -> None:
    folder, _ = ladder
    listed = json.loads(invoke("runs", str(folder), "--json").stdout)
    assert {run["name"] for run in listed} == {"bigram", "one-head", "multi-head"}
    sampled = invoke("sample", "--checkpoint", str(folder / "multi-head"), "--json",
                     "--max-new-tokens", "12", "--seed", "1")
    assert sampled.exit_code == 0, sampled.stderr
    assert len(json.loads(sampled.stdout)["completion"]) == 12
    explained = invoke("explain", "--checkpoint", str(folder / "bigram"), "--text",
                       "KING: thou art", "--json")
    assert explained.exit_code == 0, explained.stderr
    assert json.loads(explained.stdout)["mean_nats"] > 0


def test_the_human_output_shows_the_table_and_a_sample_per_rung(tmp_path: Path) -> None:
    result = invoke("lecture", "--data", str(write_text(tmp_path)), "--through", "one-head",
                    "--out", str(tmp_path / "ladder"), *QUICK)
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    assert out.count("sample (200 characters)") == 2
    assert "the lecture, replayed" in out and "lecture" in out and "2.49" in out
    assert "one attention head of 32" in out


def test_an_unknown_rung_is_one_line(tmp_path: Path) -> None:
    result = invoke("lecture", "--through", "transformer", "--out", str(tmp_path / "x"), *QUICK)
    assert_one_line_error(result, "unknown rung 'transformer'", "layernorm")
    assert result.exit_code == 2


@pytest.mark.slow
def test_ctrl_c_mid_ladder_keeps_finished_rungs_and_says_where_it_stopped(tmp_path: Path
                                                                          ) -> None:
    out = tmp_path / "ladder"
    command = [sys.executable, "-m", "chargpt_tui", "lecture", "--data",
               str(write_text(tmp_path)), "--through", "multi-head", "--out", str(out),
               "--eval-iters", "1", "--device", "cpu",
               "--rung-max-iters", "bigram=5,one-head=1000000,multi-head=5"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=subprocess_env(tmp_path / "cache"))
    metrics = out / "one-head" / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and '"StepDone"' not in (
            metrics.read_text() if metrics.exists() else ""):
        time.sleep(0.1)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "stopped during one-head at step" in " ".join(stdout.split()), stdout
    assert "Finished rungs: bigram." in " ".join(stdout.split())
    assert load_checkpoint(out / "bigram")["step"] == 5  # intact
    stopped = load_checkpoint(out / "one-head")  # saved at the step it stopped
    assert 0 < stopped["step"] < 1_000_000 and stopped["rung"] == "one-head"
    assert not (out / "multi-head").exists()
    table = json.loads((out / "ladder.json").read_text())
    assert [(row["rung"], row["state"]) for row in table["rungs"]] == [
        ("bigram", "finished"), ("one-head", "stopped")]
    assert table["stopped"]["during"] == "one-head"
