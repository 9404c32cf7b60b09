"""Shared pieces for the robustness tests: generated text, CLI runs, and the one-line checks.

Kept out of conftest.py so these tests do not collide with fixtures other test files define.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from corpus import write_corpus
from tiny_model import tiny_cli_args
from typer.testing import CliRunner

from chargpt_tui.cli import app

# A model small enough that a few steps take well under a second on a loaded 2-core box.
TINY_MODEL = [*tiny_cli_args(n_layer=1, block_size=8), "--batch-size", "4", "--eval-iters", "2",
              "--device", "cpu"]


def write_text(folder: Path, name: str = "corpus.txt", lines: int = 120, seed: int = 0) -> Path:
    return write_corpus(folder, name, lines, seed)


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str
    exception: BaseException | None


def invoke(*args: str) -> CliResult:
    """Run ``chargpt-tui ARGS`` in-process through typer's runner (stdout/stderr kept apart)."""
    result = CliRunner().invoke(app, list(args))
    exception = None if isinstance(result.exception, SystemExit) else result.exception
    return CliResult(result.exit_code, result.stdout, result.stderr, exception)


def assert_one_line_error(result: CliResult, *needles: str) -> str:
    """Failed (exit ≠ 0), no traceback, exactly one line on stderr, naming every needle."""
    assert result.exception is None, f"unexpected exception: {result.exception!r}"
    assert result.exit_code != 0, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"
    return lines[0]


def copy_run(run_dir: Path, target: Path) -> Path:
    """A private copy of a trained run folder, so a test may damage or extend it."""
    shutil.copytree(run_dir, target)
    return target


TINY_OVERRIDES = dict(n_layer=1, n_head=2, n_embd=16, block_size=8, batch_size=4, eval_iters=2)


def train_tiny(out_dir: Path, data_path: Path, steps: int = 6) -> Path:
    """Train a tiny model in-process for ``steps`` steps; returns its checkpoint file."""
    from chargpt_tui.run_setup import prepare_run
    from chargpt_tui.train import Trainer

    setup = prepare_run(data=str(data_path), preset="tiny", device="cpu", out=out_dir,
                        overrides={**TINY_OVERRIDES, "max_iters": steps, "eval_interval": steps})
    result = Trainer(setup).run()
    assert result.state == "finished"
    return out_dir / "ckpt.pt"
