"""Trainer details the bench relies on: compile failures fall back to eager from the very first
evaluation, and ``control.hold`` keeps training parked while another computation runs."""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import pytest
import torch
from tiny_model import TINY_SHAPE

from chargpt_tui.control import TrainerControl
from chargpt_tui.events import EventBus, Notice, StepDone
from chargpt_tui.run_setup import RunSetup, prepare_run
from chargpt_tui.train import Trainer


def tiny_setup(tmp_path: Path, **overrides: object) -> RunSetup:
    text_file = tmp_path / "text.txt"
    rng = random.Random(0)
    text_file.write_text("".join(rng.choices("abcdefgh \n", k=4000)), encoding="utf-8")
    options = dict(TINY_SHAPE, n_layer=1, batch_size=4, eval_iters=2, eval_interval=1000,
                   **overrides)
    return prepare_run(data=str(text_file), preset="tiny", overrides=options,
                       out=tmp_path / "run", device="cpu")


class CompilerThatFails(torch.nn.Module):
    """Stands in for a torch.compile'd model on a machine where compiling breaks."""

    def forward(self, *_args: object) -> None:
        raise RuntimeError("inductor: no working C++ compiler")


def test_compile_failure_at_the_first_evaluation_falls_back_to_eager(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch, "compile", lambda _model: CompilerThatFails())
    bus = EventBus()
    notices: list[str] = []
    bus.subscribe(lambda event: notices.append(event.message)
                  if isinstance(event, Notice) else None)
    trainer = Trainer(tiny_setup(tmp_path, compile=True, max_iters=3), bus)
    result = trainer.run()
    assert result.state == "finished" and result.step == 3
    assert trainer.train_model is trainer.model
    assert any("torch.compile failed (RuntimeError)" in message for message in notices)


def test_hold_parks_training_until_released(tmp_path: Path) -> None:
    bus = EventBus()
    steps: list[int] = []
    bus.subscribe(lambda event: steps.append(event.step) if isinstance(event, StepDone) else None)
    trainer = Trainer(tiny_setup(tmp_path, max_iters=100_000), bus)
    thread = threading.Thread(target=trainer.run)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while len(steps) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert steps, "training never started"
        with trainer.control.hold(wait=5.0):
            parked_at = len(steps)
            time.sleep(0.3)
            assert len(steps) == parked_at  # not one step while held
            assert not trainer.control.paused  # a hold is not the user's pause
        deadline = time.monotonic() + 30
        while len(steps) == parked_at and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(steps) > parked_at  # resumes by itself
    finally:
        trainer.control.stop("test over")
        thread.join(30)
    assert not thread.is_alive()


def test_hold_spans_time_every_hold_including_one_still_running() -> None:
    """The bench's timing hook: with a list in ``hold_spans`` every hold records its span; a
    hold still in progress already counts (its end is infinite until it ends)."""
    control = TrainerControl()
    with control.hold():
        pass  # not recorded: no list yet
    control.hold_spans = []
    with control.hold(), control.hold():  # nested holds are two spans
        assert [end for _, end in control.hold_spans] == [float("inf")] * 2
        assert not control._running.is_set()  # training is parked meanwhile
    assert len(control.hold_spans) == 2
    assert all(start <= end < float("inf") for start, end in control.hold_spans)
    assert control._running.is_set()
