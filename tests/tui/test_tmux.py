"""End to end in a real terminal: the installed ``chargpt-tui`` inside tmux, driven by keys.

Catches what ``run_test()`` cannot: focus in a real terminal, keys through tmux's legacy
encoding, resizing, and the process exit code and checkpoint after quitting or a signal.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tmux_terminal import Tmux
from tui_support import write_data

from chargpt_tui.checkpoint import load_checkpoint
from chargpt_tui.events import CheckpointSaved, StateChanged
from chargpt_tui.runs import read_metrics

pytestmark = pytest.mark.slow  # a real app process per test (seconds each)

CLI = Path(sys.executable).parent / "chargpt-tui"
STEP = re.compile(r"step (\d+)/100000")


def answered(screen: str) -> bool:
    """Text streamed in under the prompt line ``› ROMEO:`` (its status may be out of view:
    a long answer keeps its prompt at the top of a short transcript)."""
    # The prompt panel: the right-hand one side by side (from 100 columns), else stacked.
    lines = [line.split("││", 1)[-1].strip("│ ") for line in screen.splitlines()]
    at = next((i for i, line in enumerate(lines) if line.startswith("› ROMEO:")), None)
    if at is None:
        return False
    # The answer may begin with blank lines (a sampled newline): look at the first text under.
    under = next((line for line in lines[at + 1:] if line), "")
    return bool(under) and not under.startswith(("next", "waiting", "sample ·", "prompt ·"))


def step_on(screen: str) -> int:
    match = STEP.search(screen)
    assert match, f"no step counter on screen:\n{screen}"
    return int(match.group(1))


@pytest.fixture
def app_in_tmux(tmp_path: Path) -> Iterator[tuple[Tmux, Path, Path]]:
    """``chargpt-tui`` training a tiny model in a 100×30 tmux window.

    Yields (tmux, run folder, file that receives the exit status)."""
    data = write_data(tmp_path)
    out = tmp_path / "run"
    status = tmp_path / "exit-status"
    command = " ".join(shlex.quote(part) for part in (
        "env", f"CHARGPT_TUI_CACHE={tmp_path / 'cache'}", str(CLI),
        "--data", str(data), "--preset", "tiny", "--max-iters", "100000", "--out", str(out),
        "--device", "cpu")) + f"; echo $? > {shlex.quote(str(status))}"
    tmux = Tmux(tmp_path / "tmux.sock")
    try:
        tmux.start(command, 100, 30)
        yield tmux, out, status
    finally:
        tmux.kill()


def test_train_pause_prompt_resize_and_quit_in_tmux(
        app_in_tmux: tuple[Tmux, Path, Path]) -> None:
    tmux, out, status = app_in_tmux
    screen = tmux.wait_for(lambda s: "training" in s and STEP.search(s)
                           and step_on(s) > 20, "training to start")
    assert "prompt" in screen and "^t pause" in screen

    tmux("send-keys", "-t", "app", "C-t")
    screen = tmux.wait_for(lambda s: "paused" in s and "^t resume" in s, "the paused state")
    time.sleep(0.5)
    paused_at = step_on(tmux.screen())
    time.sleep(1.0)
    assert step_on(tmux.screen()) == paused_at

    tmux("send-keys", "-t", "app", "C-t")
    tmux.wait_for(lambda s: step_on(s) > paused_at and "paused" not in s, "training to resume")

    # Typed text must reach the prompt (focus) and the answer must stream in under it.
    tmux("send-keys", "-t", "app", "-l", "ROMEO:")
    tmux.wait_for(lambda s: "ROMEO:" in s, "the typed prompt")
    tmux("send-keys", "-t", "app", "Enter")
    tmux.wait_for(answered, "an answer under the prompt")

    tmux("resize-window", "-t", "app", "-x", "80", "-y", "24")
    screen = tmux.wait_for(lambda s: len(s.splitlines()) <= 24 and "prompt" in s
                           and "training" in s, "the 80×24 layout")
    assert max(len(line) for line in screen.splitlines()) <= 80
    assert "^q quit" in screen

    tmux("send-keys", "-t", "app", "C-q")
    assert tmux.wait_for_exit(status) == 0
    payload = load_checkpoint(out / "ckpt.pt")
    assert payload["step"] >= paused_at


@pytest.mark.parametrize(("signum", "code"), [
    (signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGHUP, 129)],
    ids=["SIGINT", "SIGTERM", "SIGHUP"])
def test_signals_save_a_checkpoint_and_exit(app_in_tmux: tuple[Tmux, Path, Path],
                                            signum: int, code: int) -> None:
    tmux, out, status = app_in_tmux
    tmux.wait_for(lambda s: STEP.search(s) is not None and step_on(s) > 20, "training")
    os.kill(tmux.app_pid(), signum)
    assert tmux.wait_for_exit(status) == code
    payload = load_checkpoint(out / "ckpt.pt")
    assert payload["step"] > 20
    # The run's log says why it stopped, and that the checkpoint holds the step it stopped at
    # (saved for the stop, or just before by an evaluation at that same step).
    events = read_metrics(out / "metrics.jsonl")
    saves = [e for e in events if isinstance(e, CheckpointSaved)]
    assert saves[-1].step == payload["step"] and saves[-1].reason in ("stop", "eval")
    stopped = [e for e in events if isinstance(e, StateChanged) and e.state == "stopped"]
    assert stopped and stopped[-1].reason == f"received {signal.Signals(signum).name}"


def process_gone(pid: int) -> bool:
    """Exited: no such process, or a zombie nobody has reaped yet (its parent shell died too)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "\nState:\tZ" in status


def test_a_closed_terminal_saves_and_ends_the_app(app_in_tmux: tuple[Tmux, Path, Path]) -> None:
    """An SSH drop: the terminal itself goes away (tmux's server dies, hanging up the pane).
    The app must save, and must not linger blocked on writes to the dead terminal."""
    tmux, out, _ = app_in_tmux
    tmux.wait_for(lambda s: STEP.search(s) is not None and step_on(s) > 20, "training")
    pid = tmux.app_pid()
    tmux("kill-server")
    deadline = time.monotonic() + 60
    while not process_gone(pid):
        assert time.monotonic() < deadline, "the app is still running after its terminal closed"
        time.sleep(0.2)
    payload = load_checkpoint(out / "ckpt.pt")
    events = read_metrics(out / "metrics.jsonl")
    stopped = [e for e in events if isinstance(e, StateChanged) and e.state == "stopped"]
    assert stopped and stopped[-1].reason == "received SIGHUP"
    saves = [e for e in events if isinstance(e, CheckpointSaved)]
    assert saves[-1].step == payload["step"] > 20
