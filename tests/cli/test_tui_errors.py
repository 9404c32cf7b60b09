"""Mistakes on the app's command line are caught before its screen opens: one line on stderr,
exit 2, the same words `train`/`sample` use, and no full-screen escape written at all."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers_robust import invoke, write_text

from tests.conftest import once_per_session

ALTERNATE_SCREEN = "\x1b[?1049h"  # what Textual writes first when its screen opens


def start_app(cwd: Path, *args: str) -> subprocess.Popen[str]:
    """``chargpt-tui ARGS`` in a real process. CHARGPT_TUI_FORCE_TUI lets the app start
    without a terminal, so a check that came too late would open the screen (and the escape
    would show in stdout) instead of passing by accident."""
    env = {**os.environ, "CHARGPT_TUI_FORCE_TUI": "1", "CHARGPT_TUI_CACHE": str(cwd / "cache")}
    return subprocess.Popen([sys.executable, "-m", "chargpt_tui", *args], cwd=cwd, env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


Refusals = dict[str, tuple[Path, subprocess.CompletedProcess[str]]]

TRAINING_MISTAKES = [
    ["--preset", "tinny"],
    ["--data", "nosuch.txt"],
    ["--data", "ftp://example.org/text.txt"],
    ["--dropout", "1.5"],
]


@pytest.fixture(scope="module")
def refusals(tmp_path_factory: pytest.TempPathFactory) -> Refusals:
    """:func:`make_refusals` once per session (the folders stay where it made them)."""
    shared = once_per_session(tmp_path_factory, "tui-refusals", lambda: {
        case: [str(folder), done.args, done.returncode, done.stdout, done.stderr]
        for case, (folder, done) in make_refusals(tmp_path_factory).items()})
    return {case: (Path(folder), subprocess.CompletedProcess(args, code, stdout, stderr))
            for case, (folder, args, code, stdout, stderr) in shared.items()}


def make_refusals(tmp_path_factory: pytest.TempPathFactory) -> Refusals:
    """Every mistake below made in its own app process, all started side by side (each pays
    torch's import, in parallel): case → (the process's folder, what it did)."""
    started = {}
    for index, options in enumerate(TRAINING_MISTAKES):
        folder = tmp_path_factory.mktemp(f"mistake{index}")
        started[" ".join(options)] = folder, start_app(folder, *options, "--device", "cpu")
    folder = tmp_path_factory.mktemp("not-a-checkpoint")
    started["not a checkpoint"] = folder, start_app(
        folder, "--checkpoint", str(write_text(folder)))
    folder = tmp_path_factory.mktemp("follow")
    started["missing follow folder"] = folder, start_app(folder, "--follow", "runs/nosuch")
    done = {}
    for case, (folder, process) in started.items():
        stdout, stderr = process.communicate(timeout=120)
        done[case] = folder, subprocess.CompletedProcess(process.args, process.returncode,
                                                         stdout, stderr)
    return done


def assert_refused_before_the_screen(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 2, done.stdout + done.stderr
    assert ALTERNATE_SCREEN not in done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


def headless_line(*args: str) -> str:
    result = invoke(*args)
    assert result.exit_code == 2, result.stdout + result.stderr
    return result.stderr.strip()


@pytest.mark.slow  # the processes of the module fixture (seconds)
@pytest.mark.parametrize("options", TRAINING_MISTAKES)
def test_training_mistakes_give_trains_line(options: list[str], refusals: Refusals,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    folder, done = refusals[" ".join(options)]
    line = assert_refused_before_the_screen(done)
    monkeypatch.chdir(folder)  # `nosuch.txt` names the same missing file for both
    assert line == headless_line("train", *options, "--device", "cpu")


@pytest.mark.slow
def test_a_file_that_is_not_a_checkpoint_gives_samples_line(refusals: Refusals) -> None:
    folder, done = refusals["not a checkpoint"]
    line = assert_refused_before_the_screen(done)
    text = folder / "corpus.txt"  # what the fixture wrote and gave the app
    assert line == headless_line("sample", "--checkpoint", str(text), "--prompt", "x")
    assert "damaged or not a checkpoint" in line


@pytest.mark.slow
def test_a_follow_folder_that_does_not_exist(refusals: Refusals) -> None:
    _, done = refusals["missing follow folder"]
    line = assert_refused_before_the_screen(done)
    assert "--follow runs/nosuch: no such run folder" in line


def test_a_headless_run_logs_live_samples_for_follow(tmp_path: Path) -> None:
    """`train` samples at every evaluation, so `--follow` has live samples to show."""
    from helpers_robust import TINY_MODEL

    from chargpt_tui.events import SampleChunk
    from chargpt_tui.runs import METRICS_NAME, read_metrics

    out = tmp_path / "run"
    result = invoke("train", "--data", str(write_text(tmp_path)), "--out", str(out),
                    *TINY_MODEL, "--max-iters", "6", "--eval-interval", "3")
    assert result.exit_code == 0, result.stderr
    events = read_metrics(out / METRICS_NAME)
    samples = [event for event in events if isinstance(event, SampleChunk)]
    assert [sample.step for sample in samples] == [3, 6]
    assert all(sample.final and sample.text for sample in samples)
