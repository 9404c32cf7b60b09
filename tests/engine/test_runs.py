"""Run folders read back: ``chargpt-tui runs`` and following a run's metrics.jsonl."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from tiny_runs import write_text
from typer.testing import CliRunner

from chargpt_tui import checkpoint, runs
from chargpt_tui.checkpoint import load_checkpoint
from chargpt_tui.cli import app
from chargpt_tui.events import Event, EventBus, Notice, SampleChunk, TrainingStarted
from chargpt_tui.run_setup import prepare_run
from chargpt_tui.runs import (
    MetricsWriter,
    _events_backwards,
    event_from_json,
    follow_metrics,
    list_runs,
    loss_history,
    read_metrics,
)
from chargpt_tui.train import Trainer

TINY = {"n_layer": 1, "n_head": 2, "n_embd": 16, "block_size": 16, "batch_size": 4,
        "eval_iters": 2, "eval_interval": 5, "sample_chars": 12}


def train(text: Path, out: Path, max_iters: int, resume: Path | None = None,
          sample_interval: int = 0) -> list[Event]:
    """A real tiny run in this process; returns every event it published."""
    setup = prepare_run(data=str(text), preset="tiny", out=out, resume=resume, device="cpu",
                        overrides={**TINY, "max_iters": max_iters,
                                   "sample_interval": sample_interval})
    bus = EventBus()
    published: list[Event] = []
    bus.subscribe(published.append)
    Trainer(setup, bus).run()
    return published


def as_recorded(events: list[Event]) -> list[Event]:
    """What metrics.jsonl holds: the same events, each live sample joined into one chunk."""
    recorded, sample = [], []
    for event in events:
        if isinstance(event, SampleChunk):
            sample.append(event.text)
            if event.final:
                recorded.append(SampleChunk(event.step, "".join(sample), final=True))
                sample = []
        else:
            recorded.append(event)
    return recorded


@pytest.fixture
def text(tmp_path: Path) -> Path:
    return write_text(tmp_path)


def test_runs_lists_two_real_runs_newest_first(tmp_path: Path, text: Path) -> None:
    root = tmp_path / "runs"
    train(text, root / "older", max_iters=12)
    train(text, root / "newer", max_iters=6)
    for name in ("metrics.jsonl", "ckpt.pt"):  # make the order unambiguous
        os.utime(root / "older" / name, (1_700_000_000, 1_700_000_000))

    result = CliRunner().invoke(app, ["runs", str(root), "--json"])
    assert result.exit_code == 0, result.output
    listed = json.loads(result.output)
    assert [run["name"] for run in listed] == ["newer", "older"]  # "latest" link not listed
    for run, steps in zip(listed, (6, 12)):
        checkpoint = load_checkpoint(root / run["name"])
        assert run["step"] == run["max_iters"] == steps
        assert run["best_val_loss"] == checkpoint["best_val_loss"]
        assert run["parameters"] == sum(t.numel() for t in checkpoint["model"].values())
        assert run["data"] == str(text)
        assert run["state"] == "finished"
        assert run["checkpoint_bytes"] == (root / run["name"] / "ckpt.pt").stat().st_size

    table = CliRunner().invoke(app, ["runs", str(root)])
    assert table.exit_code == 0
    lines = table.output.splitlines()
    assert "best val" in lines[0]
    assert "newer" in lines[1] and "6/6" in lines[1] and "finished" in lines[1]
    assert "older" in lines[2] and "12/12" in lines[2]


def test_a_run_without_metrics_is_listed_from_its_checkpoint(tmp_path: Path, text: Path) -> None:
    train(text, tmp_path / "r", max_iters=6)
    expected = list_runs(tmp_path)[0]
    (tmp_path / "r" / "metrics.jsonl").unlink()
    (from_checkpoint,) = list_runs(tmp_path)
    assert from_checkpoint.step == 6
    assert from_checkpoint.parameters == expected.parameters
    assert from_checkpoint.best_val_loss == expected.best_val_loss
    assert from_checkpoint.data == expected.data
    assert from_checkpoint.state is None  # only metrics record it


def test_runs_with_a_missing_folder_is_one_line_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["runs", str(tmp_path / "nope")])
    assert result.exit_code == 2
    assert "no runs folder at" in result.output
    assert "Traceback" not in result.output


def test_metrics_read_backwards_across_block_boundaries(tmp_path: Path, text: Path) -> None:
    train(text, tmp_path / "r", max_iters=10)
    path = tmp_path / "r" / "metrics.jsonl"
    forwards = read_metrics(path)
    assert len(forwards) > 10
    for block in (7, 64, 1000):  # smaller than one line, a few lines, many lines
        assert list(_events_backwards(path, block_size=block)) == forwards[::-1]


def test_follow_metrics_replays_a_run_then_picks_up_what_is_appended(
        tmp_path: Path, text: Path) -> None:
    run = tmp_path / "r"
    published = train(text, run, max_iters=10, sample_interval=5)
    stop = threading.Event()
    followed: queue.Queue[Event] = queue.Queue()

    def follow() -> None:
        for event in follow_metrics(run, stop, poll_interval=0.05):  # the run folder
            followed.put(event)

    follower = threading.Thread(target=follow, daemon=True)
    follower.start()
    try:
        expected = as_recorded(published)
        assert {type(e).__name__ for e in expected} >= {
            "TrainingStarted", "StepDone", "EvalDone", "CheckpointSaved", "StateChanged",
            "SampleChunk"}
        assert [followed.get(timeout=10) for _ in expected] == expected

        # resuming appends to the same file while we follow it
        more = as_recorded(train(text, run, max_iters=15, resume=run))
        assert isinstance(more[0], TrainingStarted) and more[0].step == 10
        assert [followed.get(timeout=10) for _ in more] == more

        # a line the writer is still in the middle of is not parsed until it is complete
        with (run / "metrics.jsonl").open("a") as handle:
            handle.write('{"event": "Notice", "message": "half')
            handle.flush()
            with pytest.raises(queue.Empty):
                followed.get(timeout=0.3)
            handle.write('way", "level": "info"}\n')
        assert followed.get(timeout=5) == Notice("halfway", "info")

        # a replaced file is followed from its start
        replacement = tmp_path / "new.jsonl"
        MetricsWriter(replacement)(Notice("fresh file"))
        os.replace(replacement, run / "metrics.jsonl")
        assert followed.get(timeout=5) == Notice("fresh file")
    finally:
        stop.set()
        follower.join(timeout=5)
    assert not follower.is_alive()
    assert followed.empty()


def test_follow_metrics_waits_for_a_run_that_has_not_started(tmp_path: Path) -> None:
    path = tmp_path / "later" / "metrics.jsonl"
    stop = threading.Event()
    events = follow_metrics(path, stop, poll_interval=0.05)
    threading.Timer(0.3, lambda: MetricsWriter(path)(Notice("started", "info"))).start()
    assert next(events) == Notice("started", "info")
    stop.set()
    assert list(events) == []


def test_unreadable_lines_are_skipped_not_fatal() -> None:
    assert event_from_json(b'{"event": "StepDone", "step": 1') is None  # cut by a crash
    assert event_from_json('{"event": "FromTheFuture", "step": 1}') is None
    assert event_from_json('{"event": "EvalDone", "step": 1}') is None  # fields missing
    assert event_from_json('[1, 2]') is None
    assert event_from_json('{"event": "Notice", "message": "m", "time": 5.0, "extra": 1}') == \
        Notice("m")


def test_listing_runs_does_not_import_torch() -> None:
    # `chargpt-tui runs` should answer at once; torch takes over a second to import
    assert runs.CHECKPOINT_NAME == checkpoint.CHECKPOINT_NAME
    code = "import sys, chargpt_tui.runs; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=True)
    assert done.stdout.strip() == "False"


# The rest of a StepDone record, as MetricsWriter writes it.
STEP_FIELDS = ('"max_iters": 10, "lr": 0.001, "tokens_per_second": 1.0, "elapsed": 1.0, '
               '"eta": 1.0')


def test_loss_history_skips_torn_lines_and_later_steps(tmp_path: Path) -> None:
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text(
        f'{{"event": "StepDone", "step": 1, "loss": 2.5, {STEP_FIELDS}}}\n'
        '{"event": "EvalDone", "step": 1, "val_loss": 2.7, "train_loss": 2.4, '
        '"best_val_loss": 2.7}\n'
        '{"event": "StepDone", "step": 2, "loss"\n'
        f'{{"event": "StepDone", "step": 9, "loss": 1.0, {STEP_FIELDS}}}\n', encoding="utf-8")
    assert loss_history(metrics, up_to_step=5) == ([(1, 2.5)], [(1, 2.7)])
    assert loss_history(tmp_path / "missing.jsonl", 5) == ([], [])
