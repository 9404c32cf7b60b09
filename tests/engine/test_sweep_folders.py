"""--compare's folders: a sweep or a lecture ladder stands for its runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chargpt_tui.errors import ConfigError
from chargpt_tui.sweep import compared_runs


def logged_run(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "metrics.jsonl").write_text("")
    return folder


def test_a_sweep_or_ladder_folder_stands_for_its_logged_runs(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    points = [logged_run(sweep / "lr=1e-3"), sweep / "lr=3e-3", logged_run(sweep / "lr=1e-2")]
    (sweep / "sweep.json").write_text(json.dumps(
        {"points": [{"run_dir": str(p)} for p in points]}))  # lr=3e-3 failed: no log
    ladder = tmp_path / "ladder"
    rungs = [logged_run(ladder / "bigram"), logged_run(ladder / "one-head")]
    (ladder / "ladder.json").write_text(json.dumps(
        {"rungs": [{"run_dir": str(p)} for p in rungs]}))
    plain = logged_run(tmp_path / "plain")
    assert compared_runs([sweep, plain, ladder]) == [points[0], points[2], plain, *rungs]


def test_a_sweep_without_logged_runs_is_refused(tmp_path: Path) -> None:
    (tmp_path / "sweep.json").write_text(json.dumps({"points": [{"run_dir": "x"}]}))
    with pytest.raises(ConfigError, match="no run with a training log"):
        compared_runs([tmp_path])
    (tmp_path / "sweep.json").write_text("{")
    with pytest.raises(ConfigError, match="cannot read"):
        compared_runs([tmp_path])
