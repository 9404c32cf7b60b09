"""Faults must not lose training: signals, SIGKILL mid-write, a non-finite loss, a full disk,
a closed stdout. Real processes where the behaviour is about a process (signals, kills, pipes);
in-process otherwise.
"""

from __future__ import annotations

import errno
import hashlib
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers_robust import (
    TINY_MODEL,
    assert_one_line_error,
    copy_run,
    invoke,
    train_tiny,
    write_text,
)
from tiny_model import tiny_config

import chargpt_tui
import chargpt_tui.checkpoint as checkpoint_module
from chargpt_tui.checkpoint import (
    FORMAT_VERSION,
    clean_stale_temp_files,
    load_checkpoint,
    save_checkpoint,
)
from chargpt_tui.model import GPTConfig, GPTLanguageModel
from chargpt_tui.run_setup import prepare_run
from chargpt_tui.train import Trainer
from tests.conftest import once_per_session

PACKAGE = Path(chargpt_tui.__file__).parent
BENCHMARKS = Path(__file__).parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny trained run folder (step 6); tests copy it before changing anything."""
    root = tmp_path_factory.mktemp("faults")
    return train_tiny(root / "run", write_text(root)).parent


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def temp_files(folder: Path) -> list[Path]:
    return sorted(folder.glob(".ckpt.pt.*.tmp"))


# -- signals: a real `chargpt-tui train` process ----------------------------------------------


def start_training(tmp_path: Path, name: str, *extra: str) -> tuple[subprocess.Popen[str], Path]:
    out = tmp_path / name
    corpus = write_text(tmp_path, f"{name}.txt")
    process = subprocess.Popen(
        [sys.executable, "-m", "chargpt_tui", "train", "--data", str(corpus), *TINY_MODEL,
         "--max-iters", "1000000", "--threads", "1", "--out", str(out), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "COLUMNS": "1000"})  # lines unwrapped, however long the path
    return process, out


def wait_until_training(process: subprocess.Popen[str], out: Path, timeout: float = 60) -> None:
    """The metrics log says "training" once the loop runs (it is flushed on state changes)."""
    deadline = time.monotonic() + timeout
    metrics = out / "metrics.jsonl"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"training exited early: {process.communicate()}")
        if metrics.exists() and '"state": "training"' in metrics.read_text():
            time.sleep(0.3)  # let it take some steps
            return
        time.sleep(0.05)
    process.kill()
    pytest.fail("training never started")


SIGNALS = [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGHUP, 129)]


PIPE_CLOSED = "PIPE_CLOSED"


@pytest.fixture(scope="module")
def interrupted_runs(tmp_path_factory: pytest.TempPathFactory
                     ) -> dict[str, tuple[int, str, str, Path]]:
    """:func:`run_interrupted` once per session (its run folders stay where it made them)."""
    shared = once_per_session(tmp_path_factory, "interrupted-runs", lambda: {
        name: [code, stdout, stderr, str(out)]
        for name, (code, stdout, stderr, out) in run_interrupted(tmp_path_factory).items()})
    return {name: (code, stdout, stderr, Path(out))
            for name, (code, stdout, stderr, out) in shared.items()}


def run_interrupted(tmp_path_factory: pytest.TempPathFactory
                    ) -> dict[str, tuple[int, str, str, Path]]:
    """Four trainings started side by side (each pays torch's import once, in parallel): three
    stopped by a signal, one whose reader closes its stdout, as `| head -1` does."""
    tmp_path = tmp_path_factory.mktemp("signals")
    runs = {sig.name: start_training(tmp_path, sig.name, "--eval-interval", "100000")
            for sig, _ in SIGNALS}
    # Evaluations print a line every 10 steps: the write that finds the pipe closed.
    runs[PIPE_CLOSED] = start_training(tmp_path, "piped", "--eval-interval", "10")
    piped, _ = runs[PIPE_CLOSED]
    assert piped.stdout is not None and piped.stdout.readline().startswith("training")
    for name, (process, out) in runs.items():
        wait_until_training(process, out)
        if name == PIPE_CLOSED:
            piped.stdout.close()
        else:
            process.send_signal(signal.Signals[name])
    results = {}
    for name, (process, out) in runs.items():
        if name == PIPE_CLOSED:
            process.wait(timeout=90)
            stdout, stderr = "", process.stderr.read() if process.stderr else ""
        else:
            stdout, stderr = process.communicate(timeout=90)
        results[name] = (process.returncode, stdout, stderr, out)
    return results


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "exit_code"), SIGNALS, ids=[s.name for s, _ in SIGNALS])
def test_signal_saves_a_checkpoint_at_a_step_boundary_then_exits(
        sig: signal.Signals, exit_code: int,
        interrupted_runs: dict[str, tuple[int, str, str, Path]]) -> None:
    returncode, stdout, stderr, out = interrupted_runs[sig.name]
    assert returncode == exit_code, stderr
    assert "Traceback" not in stdout + stderr
    assert f"stopped: received {sig.name}" in stdout
    saved = re.search(r"saved .*ckpt\.pt \(step (\d+)\)", stdout)
    assert saved, stdout
    payload = load_checkpoint(out)
    assert payload["step"] == int(saved.group(1)) > 0
    # A step boundary: every parameter's Adam state has taken exactly `step` steps.
    steps = {int(state["step"]) for state in payload["optimizer"]["state"].values()}
    assert steps == {payload["step"]}
    assert temp_files(out) == []


@pytest.mark.slow
def test_resume_continues_from_the_saved_step_with_the_same_optimizer_state(
        interrupted_runs: dict[str, tuple[int, str, str, Path]], tmp_path: Path) -> None:
    out = copy_run(interrupted_runs["SIGINT"][3], tmp_path / "run")
    saved = load_checkpoint(out)
    stale = out / ".ckpt.pt.leftover.tmp"
    stale.write_bytes(b"half a checkpoint")  # what a killed writer leaves behind

    # The resumed trainer's first state is exactly the saved one...
    trainer = Trainer(prepare_run(resume=out, overrides={"max_iters": saved["step"] + 3}))
    assert trainer.step == saved["step"]
    resumed = trainer.optimizer.state_dict()
    assert resumed["param_groups"] == saved["optimizer"]["param_groups"]
    for index, state in saved["optimizer"]["state"].items():
        for key, value in state.items():
            assert torch.equal(resumed["state"][index][key], value), (index, key)
    for name, value in saved["model"].items():
        assert torch.equal(trainer.model.state_dict()[name], value), name

    # ...and the CLI's --resume carries on from there (stale temp files are cleaned first).
    result = invoke("train", "--resume", str(out), "--max-iters", str(saved["step"] + 3),
                    "--device", "cpu", "--json")
    assert result.exit_code == 0, result.stderr
    assert f'"step": {saved["step"] + 3}' in result.stdout
    after = load_checkpoint(out)
    assert after["step"] == saved["step"] + 3
    assert {int(s["step"]) for s in after["optimizer"]["state"].values()} == {after["step"]}
    assert not stale.exists()


# -- SIGKILL while checkpoints are being written -----------------------------------------------


FILLER = torch.arange(1_000_000, dtype=torch.float32)  # 4 MB: writes take a while


def checkpoint_for(step: int, model: dict[str, torch.Tensor], config: GPTConfig
                   ) -> dict[str, object]:
    """A valid checkpoint, big enough that kills land mid-write, stamped with its step.

    Only ready-made or one-element tensors: a forked child must not start torch's thread
    pool (OpenMP is not fork-safe and would hang it).
    """
    return {"format_version": FORMAT_VERSION, "model_config": config.to_dict(),
            "vocab": "abcd", "model": model, "step": step, "filler": FILLER,
            "stamp": torch.tensor([step])}


@pytest.mark.slow
def test_sigkill_during_checkpoint_writes_never_leaves_a_broken_checkpoint(
        tmp_path: Path) -> None:
    config = tiny_config(vocab_size=4, block_size=8, n_layer=1)
    model = GPTLanguageModel(config).state_dict()
    path = tmp_path / "ckpt.pt"
    rng = random.Random(7)
    kills, saw_half_written, last_step = 20, 0, -1
    for _ in range(kills):
        pid = os.fork()  # a real process, without paying torch's import each time
        if pid == 0:
            try:
                step = last_step + 1
                while True:
                    save_checkpoint(checkpoint_for(step, model, config), path)
                    step += 1
            finally:
                os._exit(0)
        time.sleep(rng.uniform(0.02, 0.3))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        stale = temp_files(tmp_path)
        saw_half_written += bool(stale)
        if path.exists():  # the first writer may die before its first rename
            payload = load_checkpoint(path)
            assert int(payload["stamp"]) == payload["step"]
            assert torch.equal(payload["filler"], FILLER)
            assert payload["step"] >= last_step
            last_step = payload["step"]
        assert clean_stale_temp_files(tmp_path) == stale
        assert temp_files(tmp_path) == []
    assert last_step > 0
    assert saw_half_written > 0, "no kill landed mid-write: the test did not test anything"


# -- non-finite loss, full disk ----------------------------------------------------------------


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(trained: Path,
                                                                  tmp_path: Path) -> None:
    out = copy_run(trained, tmp_path / "run")
    before, step = digest(out / "ckpt.pt"), load_checkpoint(out)["step"]
    # A learning rate of 1e30 blows the weights up within a few steps: a real divergence.
    result = invoke("train", "--resume", str(out), "--learning-rate", "1e30",
                    "--max-iters", str(step + 50), "--eval-interval", "1000", "--device", "cpu")
    assert_one_line_error(result, "loss became nan", "kept the last good checkpoint",
                          "--learning-rate")
    assert result.exit_code == 1
    assert digest(out / "ckpt.pt") == before
    assert load_checkpoint(out)["step"] == step


def test_full_disk_keeps_the_previous_checkpoint(trained: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    out = copy_run(trained, tmp_path / "run")
    before, step = digest(out / "ckpt.pt"), load_checkpoint(out)["step"]
    real_save = torch.save

    def save_until_the_disk_fills(payload: object, handle: object) -> None:
        real_save(payload, handle)  # a partial temp file exists on disk...
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # ...when the disk fills up

    monkeypatch.setattr(checkpoint_module.torch, "save", save_until_the_disk_fills)
    result = invoke("train", "--resume", str(out), "--max-iters", str(step + 2),
                    "--eval-interval", "1", "--device", "cpu")
    assert_one_line_error(result, "could not write checkpoint", "No space left on device",
                          "previous checkpoint is intact")
    monkeypatch.undo()
    assert digest(out / "ckpt.pt") == before
    assert load_checkpoint(out)["step"] == step
    assert temp_files(out) == []


# -- a closed stdout (`| head`, a dropped session) --------------------------------------------


@pytest.mark.slow
def test_closed_stdout_saves_and_stops_without_a_traceback(
        interrupted_runs: dict[str, tuple[int, str, str, Path]]) -> None:
    returncode, _, stderr, out = interrupted_runs[PIPE_CLOSED]
    assert returncode == 141, stderr
    assert "Traceback" not in stderr
    assert "standard output closed" in stderr
    assert load_checkpoint(out)["step"] > 0
    assert temp_files(out) == []


# -- security ----------------------------------------------------------------------------------


def package_sources() -> dict[Path, str]:
    return {path: path.read_text() for path in PACKAGE.rglob("*.py")}


def test_every_torch_load_in_the_package_is_weights_only() -> None:
    calls = [(path, call) for path, text in package_sources().items()
             for call in re.findall(r"torch\.load\([^)]*\)", text)]
    assert calls, "expected at least the checkpoint loader"
    assert all("weights_only=True" in call for _, call in calls), calls


def test_the_package_never_runs_shell_commands() -> None:
    """No shell, no eval/exec anywhere. The two modules that start processes (the benchmark
    times `chargpt-tui --help` and the app's start-up; a sweep runs one `train` per point)
    pass argument lists: nothing a user typed can reach a shell."""
    risky = re.compile(r"os\.system|os\.popen|shell=True|(?<![.\w])(eval|exec)\(")
    offenders = [path for path, text in package_sources().items() if risky.search(text)]
    assert offenders == []
    spawning = {path.name: text for path, text in package_sources().items()
                if re.search(r"\bsubprocess\b", text)}
    assert set(spawning) == {"app_cases.py", "sweep.py"}
    calls = re.findall(r"subprocess\.run\((\w+)", spawning["app_cases.py"])
    assert calls and set(calls) == {"command", "paint_command"}
    # Both commands are fixed argument lists: this Python (or its chargpt-tui script) + flags.
    from chargpt_tui.bench.app_cases import help_command

    assert help_command()[-1] == "--help" and Path(help_command()[0]).parent == Path(
        sys.executable).parent
    paint = "paint_command = [sys.executable, \"-c\", FIRST_PAINT_SCRIPT,"
    assert paint in spawning["app_cases.py"]
    # A sweep point's command is a list that starts with this Python and `-m chargpt_tui train`.
    assert re.findall(r"subprocess\.Popen\((\S+),", spawning["sweep.py"]) == ["point.command"]
    assert 'command = [python, "-m", "chargpt_tui", "train",' in spawning["sweep.py"]


def test_the_benchmark_scripts_never_run_shell_commands() -> None:
    """The scripts in benchmarks/ start tmux, pgrep, our train command and nanoGPT's with
    argument lists; the one shell line the tmux driver hands on (a pane's command) is built by
    the GPU-pace benchmark from shlex-quoted words."""
    scripts = {path.name: path.read_text() for path in BENCHMARKS.glob("*.py")}
    risky = re.compile(r"os\.system|os\.popen|shell=True|(?<![.\w])(eval|exec)\(")
    assert [name for name, text in scripts.items() if risky.search(text)] == []
    programs = re.findall(r"subprocess\.run\(\[\"(\w+)\"", scripts["tmux_terminal.py"])
    assert set(programs) == {"tmux", "pgrep"}
    assert len(programs) == scripts["tmux_terminal.py"].count("subprocess.run(")
    assert '" ".join(shlex.quote(w) for w in words)' in scripts["app_at_gpu_pace.py"]
    peer_calls = re.findall(r"subprocess\.run\((\w+|\[)", scripts["time_to_quality.py"])
    assert peer_calls and set(peer_calls) <= {"command", "["}


def test_metrics_log_on_a_full_device_does_not_stop_training(tmp_path: Path) -> None:
    if not Path("/dev/full").exists():
        pytest.skip("needs Linux /dev/full (every write fails with ENOSPC)")
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.jsonl").symlink_to("/dev/full")
    corpus = write_text(tmp_path)
    result = invoke("train", "--data", str(corpus), *TINY_MODEL, "--max-iters", "3",
                    "--eval-interval", "2", "--out", str(out), "--json")
    assert result.exit_code == 0 and result.exception is None, result.stderr
    assert load_checkpoint(out)["step"] == 3
