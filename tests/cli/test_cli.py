"""The headless CLI as a user runs it: train --json, sample (streamed, beam, JSON), help."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

CLI = [sys.executable, "-m", "chargpt_tui"]


def run_cli(*args: str, timeout: float = 120, **kwargs: object) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout,
                          **kwargs)


def run_cli_side_by_side(*commands: list[str], cwd: Path) -> list[tuple[int, str, str]]:
    """Several ``chargpt-tui`` processes at once (each pays torch's import, in parallel);
    returns each one's (exit code, stdout, stderr)."""
    processes = [subprocess.Popen([*CLI, *args], cwd=cwd, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for args in commands]
    outputs = [process.communicate(timeout=120) for process in processes]
    return [(process.returncode, *output) for process, output in zip(processes, outputs)]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    from tests.conftest import make_corpus

    folder = tmp_path_factory.mktemp("cli")
    data = folder / "play.txt"
    data.write_text(make_corpus(30_000))
    result = run_cli("train", "--data", str(data), "--preset", "tiny", "--max-iters", "60",
                     "--eval-interval", "30", "--out", str(folder / "runs" / "first"), "--json",
                     cwd=folder)
    assert result.returncode == 0, result.stderr
    return folder, json.loads(result.stdout)


@pytest.mark.slow  # the runs here are real processes (seconds each)
def test_train_json_reports_the_run(trained_run: tuple[Path, dict]) -> None:
    folder, report = trained_run
    for key in ("step", "train_loss", "val_loss", "tokens_per_second", "checkpoint", "device",
                "parameters"):
        assert key in report, key
    assert report["step"] == 60 and report["device"] == "cpu" and report["parameters"] > 1000
    assert report["val_loss"] < 3.5 and report["tokens_per_second"] > 0
    assert Path(report["checkpoint"]).is_file()
    # the best val and where it came from (evaluations at 0, 30 and 60)
    assert report["best_step"] in (30, 60) and report["best_val_loss"] <= report["val_loss"]


@pytest.mark.slow
def test_sample_streams_a_continuation_of_the_prompt(trained_run: tuple[Path, dict]) -> None:
    folder, _ = trained_run
    command = ["sample", "--checkpoint", "runs/latest", "--prompt", "ROMEO:",
               "--max-new-tokens", "50", "--seed", "1"]
    (code, stdout, stderr), (_, again, _) = run_cli_side_by_side(command, command, cwd=folder)
    assert code == 0, stderr
    assert stdout.startswith("ROMEO:") and len(stdout) == len("ROMEO:") + 50 + 1
    assert again == stdout  # seeded: reproducible


@pytest.mark.slow
def test_sample_output_arrives_while_it_is_generated(trained_run: tuple[Path, dict]) -> None:
    """Plain mode streams: the first characters arrive long before the process ends."""
    folder, _ = trained_run
    process = subprocess.Popen(
        [*CLI, "sample", "--checkpoint", "runs/first", "--prompt", "A", "--max-new-tokens",
         "200000", "--seed", "0"], cwd=folder, stdout=subprocess.PIPE, text=True)
    try:
        first = process.stdout.read(20)
        assert len(first) == 20 and process.poll() is None  # still generating
    finally:
        process.kill()
        process.wait()


@pytest.mark.slow
def test_sample_beam_json_lists_beams_best_first(trained_run: tuple[Path, dict]) -> None:
    folder, _ = trained_run
    command = ["sample", "--checkpoint", "runs/latest", "--prompt", "JULIET:",
               "--beam-width", "4", "--max-new-tokens", "30"]
    (code, stdout, stderr), (_, plain, _) = run_cli_side_by_side([*command, "--json"], command,
                                                                 cwd=folder)
    assert code == 0, stderr
    report = json.loads(stdout)
    scores = [beam["score"] for beam in report["beams"]]
    assert len(scores) == 4 and scores == sorted(scores, reverse=True)
    assert report["completion"] == report["beams"][0]["text"] and len(report["completion"]) == 30
    assert plain == "JULIET:" + report["completion"] + "\n"


def test_help_is_fast_and_documents_every_command() -> None:
    started = time.perf_counter()
    result = run_cli("--help")
    assert result.returncode == 0
    for command in ("train", "sample", "tui"):
        assert command in result.stdout
    # Not a timing target (that lives in the bench): a check that help never imports torch.
    probe = subprocess.run(
        [sys.executable, "-c", "import sys; from chargpt_tui.cli import main\n"
         "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
         "print('torch' in sys.modules, 'textual' in sys.modules)"],
        capture_output=True, text=True, timeout=60)
    assert probe.stdout.strip().endswith("False False"), probe.stdout
    assert time.perf_counter() - started < 60


def test_train_help_lists_options_with_help_text() -> None:
    result = run_cli("train", "--help", env={**os.environ, "COLUMNS": "200"})
    for option in ("--data", "--preset", "--n-layer", "--n-head", "--n-embd", "--block-size",
                   "--batch-size", "--dropout", "--learning-rate", "--max-iters",
                   "--eval-interval", "--eval-iters", "--device", "--seed", "--compile",
                   "--out", "--resume", "--json"):
        assert option in result.stdout, option


def help_at_80_columns(*args: str) -> str:
    """A help page as an 80-column terminal shows it (stable line breaks)."""
    result = run_cli(*args, "--help", env={**os.environ, "COLUMNS": "80"})
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.slow  # a process per command
def test_no_help_page_gives_a_flag_a_type() -> None:
    """A flag takes no value: `--debug`, not `--debug  <bool>` (typer 0.29's rich help adds
    one), in every command's help; options that take a value keep theirs."""
    from chargpt_tui.cli import COMMANDS

    for command in ((), *((name,) for name in sorted(COMMANDS))):
        page = help_at_80_columns(*command)
        assert "--help" in page and "<bool>" not in page, command
    tui = help_at_80_columns("tui")
    assert "--no-mouse" in tui and "<path>" in tui and "<int>" in tui


def test_top_level_help_lists_the_apps_own_options() -> None:
    """`chargpt-tui --preset tiny` opens the app, so `chargpt-tui --help` documents its options:
    after the commands, under the app's own usage line, every option `tui --help` lists."""
    import typer.main

    from chargpt_tui import cli

    page = help_at_80_columns()
    commands, _, app_part = re.split(r"^( *Usage: chargpt-tui \[OPTIONS\] *)$", page,
                                    flags=re.MULTILINE)
    assert "Usage: chargpt-tui [OPTIONS] COMMAND" in commands and "bench " in commands
    assert "chargpt-tui tui --help" in app_part
    for option in ("--preset", "--checkpoint", "--follow", "--data", "--device", "--no-mouse"):
        assert option in app_part, option
    tui = typer.main.get_command(cli.app).commands["tui"]
    for param in tui.params:
        assert f"{param.opts[0]} " in app_part, param.opts
    for panel in ("Options", "Data", "Model", "Training", "Recipe", "Checkpoints"):
        assert f"─ {panel} ─" in app_part, panel
    assert page.count("--help  ") == 1  # --help is listed once, with --debug and --version


def test_app_without_a_terminal_points_to_headless_training() -> None:
    result = run_cli("--preset", "tiny", stdin=subprocess.DEVNULL)
    assert result.returncode == 2
    assert "chargpt-tui train" in result.stderr and "Traceback" not in result.stderr


def test_train_and_tui_share_one_option_list(monkeypatch: pytest.MonkeyPatch) -> None:
    """Both commands take every training option (they once drifted: `tui` had no
    --grad-accum-steps), and the app receives the ones given as overrides."""
    import typer.main
    from typer.testing import CliRunner

    from chargpt_tui import cli
    from chargpt_tui.tui import launch

    command = typer.main.get_command(cli.app)
    options = {name: {p.name for p in command.commands[name].params}
               for name in ("train", "tui")}
    tui_only = {"checkpoint", "meta", "follow", "compare", "mouse", "lecture", "through",
                "scaled_budget"}
    assert options["train"] - {"as_json"} == options["tui"] - tui_only
    assert "grad_accum_steps" in options["tui"]

    received: dict[str, object] = {}
    monkeypatch.setattr(launch, "resolve_source", lambda **kwargs: received.update(kwargs))
    monkeypatch.setattr(launch, "run_app",
                        lambda source, **kwargs: received.update(kwargs) or (0, []))
    monkeypatch.setenv("CHARGPT_TUI_FORCE_TUI", "1")
    result = CliRunner().invoke(cli.app, ["tui", "--grad-accum-steps", "2", "--preset", "tiny",
                                          "--no-mouse"])
    assert result.exit_code == 0, result.output
    assert received["overrides"] == {"grad_accum_steps": 2}
    assert received["preset"] == "tiny" and received["mouse"] is False


@pytest.mark.slow
def test_the_commands_a_budgeted_run_suggests_run(tmp_path: Path) -> None:
    """A default tiny run with a time budget ends with a sample and a `train further` line:
    both run as printed, and `sample` says which file and step it answers from."""
    from tests.conftest import make_corpus

    (tmp_path / "play.txt").write_text(make_corpus(20_000))
    first = run_cli("train", "--data", "play.txt", "--preset", "tiny", "--time-budget", "4s",
                    "--out", "runs/b", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    hints = dict(line.split(": ", 1) for line in first.stdout.splitlines()
                 if line.startswith(("try: ", "train further: ")))
    assert hints["train further"] == "chargpt-tui train --resume runs/b --time-budget 4s"
    again = run_cli(*hints["train further"].split()[1:], "--json", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["state"] == "finished"
    sample = run_cli(*hints["try"].split()[1:], "--max-new-tokens", "5", cwd=tmp_path)
    assert sample.returncode == 0, sample.stderr
    assert re.search(r"answering from runs/b/(best|ckpt)\.pt \(step \d+", sample.stderr)
