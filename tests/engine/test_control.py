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
from chargpt_tui.events import EvalDone, EventBus, Notice, StepDone
from chargpt_tui.run_setup import RunSetup, prepare_run
from chargpt_tui.train import Trainer


def tiny_setup(tmp_path: Path, **overrides: object) -> RunSetup:
    text_file = tmp_path / "text.txt"
    rng = random.Random(0)
    text_file.write_text("".join(rng.choices("abcdefgh \n", k=4000)), encoding="utf-8")
    options = {**TINY_SHAPE, "n_layer": 1, "batch_size": 4, "eval_iters": 2,
               "eval_interval": 1000, **overrides}
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


def test_a_hold_gets_in_between_the_batches_of_an_evaluation(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A prompt typed while the model is being evaluated is let in between two evaluation
    batches, not after the whole evaluation (nor beside it: the evaluation waits meanwhile)."""
    bus = EventBus()
    steps: list[int] = []
    evaluated: list[int] = []
    bus.subscribe(lambda event: steps.append(event.step) if isinstance(event, StepDone) else None)
    bus.subscribe(lambda event: evaluated.append(event.step)
                  if isinstance(event, EvalDone) else None)
    # 300 batches per split, each 10 ms longer from step 3 until the hold is over: the
    # evaluation at step 3 lasts seconds (asleep, not computing), far longer than one step.
    trainer = Trainer(tiny_setup(tmp_path, max_iters=3, eval_interval=3, eval_iters=300), bus)
    hold_over = threading.Event()
    let_holds_run = trainer.control.let_holds_run

    def slow_batch_end() -> None:
        let_holds_run()
        if 3 in steps and not hold_over.is_set():
            time.sleep(0.01)

    monkeypatch.setattr(trainer.control, "let_holds_run", slow_batch_end)
    thread = threading.Thread(target=trainer.run)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while 3 not in steps and time.monotonic() < deadline:
            time.sleep(0.001)
        assert 3 in steps, "training never reached its evaluation"
        # Waits as long as needed: without the evaluation letting it in, the hold would begin
        # only once the evaluation (and the run) had ended.
        with trainer.control.hold(wait=60.0):
            assert 3 not in evaluated  # in the middle of the evaluation
            time.sleep(0.3)
            assert 3 not in evaluated  # which waits while the hold lasts
        hold_over.set()
    finally:
        thread.join(60)
    assert not thread.is_alive() and 3 in evaluated


def test_let_holds_run_parks_only_while_someone_holds() -> None:
    control = TrainerControl()
    units, done = [0], threading.Event()

    def long_work() -> None:  # an evaluation's batches, say, after a step
        assert control.wait_until_runnable(lambda _state: None)  # as the loop does per step
        while not done.is_set():
            units[0] += 1
            control.let_holds_run()
            time.sleep(0.001)

    worker = threading.Thread(target=long_work)
    worker.start()
    try:
        while units[0] < 5:
            time.sleep(0.001)
        assert control.take_parked_in_work() == 0.0  # nobody held it yet
        with control.hold(wait=10.0):
            parked_at = units[0]
            time.sleep(0.2)
            assert units[0] == parked_at
        while units[0] == parked_at:  # carries on by itself once released
            time.sleep(0.001)
        # What a time budget gives back: at least the 0.2 s held, once.
        assert control.take_parked_in_work() >= 0.2
        assert control.take_parked_in_work() == 0.0
        control.pause()  # the user's pause is for step boundaries, not for this
        moving = units[0]
        time.sleep(0.1)
        assert units[0] > moving
    finally:
        done.set()
        worker.join(10)
