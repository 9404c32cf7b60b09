"""Training: schedule, events, control from other threads, and bitwise-exact resume."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pytest
import torch

from chargpt_tui.checkpoint import load_checkpoint
from chargpt_tui.events import (
    CheckpointSaved,
    EvalDone,
    EventBus,
    SampleChunk,
    StateChanged,
    StepDone,
    TrainingStarted,
)
from chargpt_tui.run_setup import prepare_run
from chargpt_tui.train import TrainConfig, Trainer, get_lr, park_between_blocks
from tests.conftest import TINY


def wait_until(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


def test_learning_rate_warms_up_then_decays_to_the_floor() -> None:
    config = TrainConfig(max_iters=100, learning_rate=1.0, warmup_iters=10)
    lrs = [get_lr(step, config) for step in range(120)]
    assert lrs[0] < lrs[5] < lrs[9] <= 1.0
    assert all(a >= b for a, b in zip(lrs[10:100], lrs[11:100]))  # monotone cosine decay
    assert lrs[100] == lrs[119] == pytest.approx(0.1)  # floor: learning_rate / 10


def run_trainer(corpus_file: Path, out: Path, **overrides: object) -> tuple[Trainer, list]:
    events: list = []
    bus = EventBus()
    bus.subscribe(events.append)
    setup = prepare_run(data=str(corpus_file), preset="tiny", out=out,
                        overrides={**TINY, **overrides}, device="cpu")
    return Trainer(setup, bus), events


def test_a_run_publishes_its_story_and_learns(corpus_file: Path, tmp_path: Path) -> None:
    trainer, events = run_trainer(corpus_file, tmp_path / "run", max_iters=30, sample_interval=30,
                                  sample_chars=12)
    result = trainer.run()
    kinds = [type(e) for e in events]
    assert kinds[0] is TrainingStarted
    assert sum(k is StepDone for k in kinds) == 30
    evals = [e for e in events if isinstance(e, EvalDone)]
    assert [e.step for e in evals] == [0, 10, 20, 30]
    assert evals[-1].val_loss < evals[0].val_loss  # it learns something
    saved = [e for e in events if isinstance(e, CheckpointSaved)]
    assert saved[-1].reason == "final" and Path(saved[-1].path).is_file()
    sample = [e for e in events if isinstance(e, SampleChunk)]
    assert "".join(e.text for e in sample[:-1]) and sample[-1].final and len(sample) == 13
    assert events[-1] == StateChanged("finished")
    assert result.state == "finished" and result.step == 30 and result.tokens_per_second > 0
    assert (tmp_path / "latest").is_symlink() and (tmp_path / "latest" / "ckpt.pt").is_file()
    assert (tmp_path / "run" / "metrics.jsonl").read_text().count('"StepDone"') == 30


def test_pause_resume_and_stop_from_another_thread(corpus_file: Path, tmp_path: Path) -> None:
    trainer, events = run_trainer(corpus_file, tmp_path / "run", max_iters=100_000,
                                  eval_interval=100_000)
    results = []
    thread = threading.Thread(target=lambda: results.append(trainer.run()))
    thread.start()
    wait_until(lambda: trainer.step >= 5)
    trainer.control.pause()
    wait_until(lambda: StateChanged("paused") in events)
    paused_at = trainer.step
    time.sleep(0.3)
    assert trainer.step == paused_at  # a paused trainer takes no steps
    trainer.control.resume()
    wait_until(lambda: trainer.step > paused_at + 5)
    with trainer.control.hold(wait=5.0):  # a hold parks it too, without a "paused" state
        held_at = trainer.step
        time.sleep(0.2)
        assert trainer.step == held_at
    wait_until(lambda: trainer.step > held_at)
    assert events.count(StateChanged("paused")) == 1
    trainer.control.stop("test is done", exit_code=3)
    thread.join(timeout=20)
    assert not thread.is_alive()
    result = results[0]
    assert result.state == "stopped" and result.exit_code == 3
    checkpoint = load_checkpoint(tmp_path / "run")
    assert checkpoint["step"] == result.step  # saved at the step where it stopped


def test_save_request_writes_a_checkpoint_at_a_step_boundary(corpus_file: Path,
                                                              tmp_path: Path) -> None:
    trainer, events = run_trainer(corpus_file, tmp_path / "run", max_iters=100_000,
                                  eval_interval=100_000)
    thread = threading.Thread(target=trainer.run)
    thread.start()
    wait_until(lambda: trainer.step >= 3)
    trainer.control.request_save()
    wait_until(lambda: any(isinstance(e, CheckpointSaved) for e in events))
    trainer.control.stop()
    thread.join(timeout=20)
    requested = next(e for e in events if isinstance(e, CheckpointSaved))
    assert requested.reason == "requested" and requested.step >= 3


def cli_train(*args: str) -> None:
    command = [sys.executable, "-m", "chargpt_tui", "train", "--json", "--device", "cpu",
               "--threads", "1", *args]  # fixed: a measured choice could differ between runs
    subprocess.run(command, check=True, capture_output=True, timeout=120)


@pytest.mark.slow  # three training processes
def test_resume_in_a_fresh_process_is_bitwise_identical(corpus_file: Path, tmp_path: Path) -> None:
    """20 steps + save + resume for 20 more ≡ 40 straight steps (weights and optimizer)."""
    shape = ["--data", str(corpus_file), "--preset", "tiny", "--n-layer", "2", "--n-embd", "16",
             "--block-size", "16", "--batch-size", "4", "--dropout", "0.1",  # dropout: RNG matters
             "--eval-interval", "10", "--eval-iters", "2", "--lr-decay-iters", "40"]
    cli_train(*shape, "--max-iters", "20", "--out", str(tmp_path / "split"))
    cli_train("--resume", str(tmp_path / "split"), "--max-iters", "40")
    cli_train(*shape, "--max-iters", "40", "--out", str(tmp_path / "straight"))
    split = load_checkpoint(tmp_path / "split")
    straight = load_checkpoint(tmp_path / "straight")
    assert split["step"] == straight["step"] == 40
    for name, tensor in straight["model"].items():
        assert torch.equal(split["model"][name], tensor), name
    for index, state in straight["optimizer"]["state"].items():
        for key, value in state.items():
            assert torch.equal(split["optimizer"]["state"][index][key], value), (index, key)
    assert torch.equal(split["rng"]["data"], straight["rng"]["data"])


def test_resume_refuses_a_different_model_shape(corpus_file: Path, tmp_path: Path) -> None:
    trainer, _ = run_trainer(corpus_file, tmp_path / "run", max_iters=2)
    trainer.run()
    from chargpt_tui.errors import ConfigError

    with pytest.raises(ConfigError, match="cannot change n_layer"):
        prepare_run(data=str(corpus_file), resume=tmp_path / "run", overrides={"n_layer": 3})


def test_best_weights_are_kept_apart_for_sampling(corpus_file: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """best.pt holds the weights of the lowest validation loss; ckpt.pt the latest state."""
    from chargpt_tui import train
    from chargpt_tui.checkpoint import resolve_checkpoint

    # Script the validation curve of an overfitting run: down, then up again after step 10.
    curve = iter([3.0, 2.0, 2.5, 2.7])
    monkeypatch.setattr(train, "estimate_loss", lambda *a, **k: {"train": 1.0, "val": next(curve)})
    trainer, events = run_trainer(corpus_file, tmp_path / "run", max_iters=30, eval_interval=10)
    trainer.run()
    assert [(e.step, e.val_loss) for e in events if isinstance(e, EvalDone)] == [
        (0, 3.0), (10, 2.0), (20, 2.5), (30, 2.7)]
    best = load_checkpoint(tmp_path / "run", prefer_best=True)
    assert best["step"] == 10 and best["best_val_loss"] == 2.0
    assert "optimizer" not in best  # for sampling only
    assert resolve_checkpoint(tmp_path / "run", prefer_best=True).name == "best.pt"
    latest = load_checkpoint(tmp_path / "run")
    assert latest["step"] == 30 and "optimizer" in latest
    # The weights really are step 10's, not the latest ones.
    assert any(not torch.equal(best["model"][k], latest["model"][k]) for k in latest["model"])


@pytest.mark.parametrize("with_callback", [True, False])
def test_a_setup_notice_reaches_the_user_exactly_once(tmp_path: Path, with_callback: bool,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The offline-fallback notice: through the callback at once, or else as a Notice event
    when training starts — never both (the CLI printed it twice)."""
    from chargpt_tui.events import Notice

    monkeypatch.setenv("CHARGPT_TUI_SHAKESPEARE_URL", "http://127.0.0.1:9/input.txt")  # refused
    told: list[str] = []
    setup = prepare_run(data="shakespeare", preset="tiny", out=tmp_path / "run", device="cpu",
                        overrides={"max_iters": 1, "eval_iters": 1},
                        notice=told.append if with_callback else None)
    events: list = []
    bus = EventBus()
    bus.subscribe(events.append)
    Trainer(setup, bus).run()
    published = [e.message for e in events if isinstance(e, Notice)]
    shown = told + published
    assert len(shown) == 1 and "could not download Tiny Shakespeare" in shown[0]
    assert bool(told) == with_callback


# -- time budgets that train ---------------------------------------------------------------------


def test_a_time_budget_paces_evaluations_and_samples_by_the_clock(
        corpus_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """60 s on a clock that moves 0.2 s a reading: slow evaluation batches shrink eval_iters,
    evaluations come every 20 s with a live sample each, and one of each at the end."""
    from chargpt_tui.events import EvalProgress, Notice

    trainer, events = run_trainer(corpus_file, tmp_path / "run", time_budget=60.0,
                                  eval_iters=50, sample_interval=10, sample_chars=4)
    monkeypatch.setattr(trainer, "time_one_eval_batch", lambda: 0.5)  # 2×50 batches: 50 s
    ticks = iter(range(10**9))
    trainer.clock = lambda: trainer.setup.started + 0.2 * next(ticks)
    result = trainer.run()
    assert result.state == "finished" and "time budget" in result.reason
    # 10% of 60 s over 5 evaluations (start, every 20 s, end): 1.2 s each → 1 batch per split
    # (later ones are sized from the last one's pace: on this clock they cost next to nothing)
    progress = [e for e in events if isinstance(e, EvalProgress)]
    assert [(e.step, e.done, e.total) for e in progress[:2]] == [(0, 1, 2), (0, 2, 2)]
    evals = [e.step for e in events if isinstance(e, EvalDone)]
    samples = [e.step for e in events if isinstance(e, SampleChunk) and e.final]
    assert evals[0] == 0 and evals[-1] == result.step and 3 <= len(evals) <= 5
    assert samples == evals[1:]  # a live sample with every evaluation after the start
    steps = [e for e in events if isinstance(e, StepDone)]
    assert all(e.max_iters is None for e in steps[:4])  # ~? until the pace is known
    assert steps[-1].max_iters is not None and steps[-1].max_iters < 10**9
    assert steps[-1].budget_seconds == 60.0 and 0 < steps[-1].budget_used <= 60.0  # type: ignore[operator]
    assert StateChanged("evaluating") in events
    assert any("steps trained in 1m" in e.message for e in events if isinstance(e, Notice))


def test_a_time_budget_warms_up_over_a_small_share_of_the_time() -> None:
    config = TrainConfig(warmup_iters=1000, learning_rate=1.0, schedule="wsd")
    assert get_lr(10, config, progress=0.01) == pytest.approx(0.2)
    assert get_lr(10, config, progress=0.06) == 1.0  # warm after 5% of the time
    assert get_lr(10, config) == pytest.approx(11 / 1001)  # no budget: by steps


def test_eval_iters_fit_a_tenth_of_the_budget() -> None:
    from chargpt_tui.train import TimeBudget

    budget = TimeBudget(300.0, started=0.0, clock=lambda: 0.0)
    assert budget.every == 30.0
    # 12 evaluations share 30 s: 2.5 s each, at 10 ms a batch 125 per split, capped at 20
    assert budget.eval_iters(0.01, most=20) == 20
    assert budget.eval_iters(0.1, most=20) == 12
    assert budget.eval_iters(5.0, most=20) == 1


# -- threads that don't thrash -------------------------------------------------------------------


def test_pick_threads_keeps_the_fastest_count_measured_alternately(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from chargpt_tui import device

    order: list[int] = []
    seconds = {1: 0.02, 2: 0.035}  # a busy machine: two threads wait on each other

    def work() -> None:
        order.append(torch.get_num_threads())
        time.sleep(seconds[torch.get_num_threads()])

    before = torch.get_num_threads()
    try:
        choice = device.pick_threads(work, [1, 2], rounds=3)
        assert choice.threads == 1 == torch.get_num_threads()
        rounds = order[1:]  # after a warm-up: alternating rounds (3, unless one tells)
        assert order[0] == 1 and rounds == [1, 2] * (len(rounds) // 2) and len(rounds) >= 2
        assert choice.message().startswith("busy machine: training on 1 thread, ")
        seconds.update({1: 0.02, 2: 0.001})
        order.clear()
        assert device.pick_threads(work, [1, 2], rounds=3).threads == 2
        assert order == [1, 1, 2]  # 20× apart: one round tells
    finally:
        torch.set_num_threads(before)


def test_the_thread_probe_changes_nothing_and_is_announced(
        corpus_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from chargpt_tui import device
    from chargpt_tui.events import Notice

    trainer, events = run_trainer(corpus_file, tmp_path / "run", max_iters=1, dropout=0.1)
    weights = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    rng = torch.get_rng_state()
    trainer.probe_step()
    assert torch.equal(rng, torch.get_rng_state())
    assert all(p.grad is None for p in trainer.model.parameters())
    assert all(torch.equal(v, weights[k]) for k, v in trainer.model.state_dict().items())
    # with --threads not given, a run measures and says what it chose
    monkeypatch.setattr(device, "_THREADS_GIVEN", [])
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # as the suite runs: a choice, made outside
    assert device.threads_given()
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setattr("chargpt_tui.train.thread_candidates", lambda: [1, 2])
    monkeypatch.setattr("chargpt_tui.train.machine_load", lambda: (0.5, 2))  # an idle machine
    before = torch.get_num_threads()
    try:
        trainer.run()
        said = [e.message for e in events if isinstance(e, Notice)]
        assert any(m.startswith(("training on 2 threads, ", "busy machine: training on 1 "))
                   and "faster here than" in m for m in said), said
        # more runnable jobs than cores: one thread, told without timing the others
        busy, events = run_trainer(corpus_file, tmp_path / "busy", max_iters=1)
        monkeypatch.setattr("chargpt_tui.train.machine_load", lambda: (5.0, 2))
        monkeypatch.setattr(busy, "probe_step", lambda: pytest.fail("timed on a busy machine"))
        busy.run()
        assert torch.get_num_threads() == 1
        assert ("busy machine (load average 5.0 on 2 cores): training on 1 thread "
                "(--threads overrides)") in [e.message for e in events if isinstance(e, Notice)]
    finally:
        torch.set_num_threads(before)


# -- a prompt may cut in between two blocks of a step -------------------------------------------


def prompt_in_the_middle(trainer: Trainer, module: torch.nn.Module, backward: bool
                         ) -> list[dict[str, bool]]:
    """Ask for a hold (as a prompt does) once, from inside ``module``'s forward or backward, and
    say what the prompt found when it was let in: were the weights as before the step, and
    how far had the step gone."""
    control = trainer.control
    control.hold_spans = []
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    first_block = trainer.model.blocks[0]
    seen: list[dict[str, bool]] = []

    def prompt() -> None:  # what the app does: hold, copy the weights, let go
        with control.hold(wait=10.0):
            seen.append({
                "weights_unchanged": all(torch.equal(v, before[k])
                                         for k, v in trainer.model.state_dict().items()),
                "first_block_has_grads": any(p.grad is not None
                                             for p in first_block.parameters()),
                "first_block_ran": forwards[0] > 0, "second_block_ran": forwards[1] > 0})

    def ask(*_: object) -> None:
        if not control.hold_spans:
            threading.Thread(target=prompt).start()
            wait_until(lambda: bool(control.hold_spans))
            time.sleep(0.05)  # the prompt is waiting: the step must now park for it

    forwards = [0, 0]
    counters = [block.register_forward_hook(partial(count, forwards, i))
                for i, block in enumerate(trainer.model.blocks)]
    asker = (module.register_full_backward_hook(ask) if backward
             else module.register_forward_hook(ask))
    hooks = park_between_blocks(trainer.model, control)
    try:
        assert control.wait_until_runnable(lambda state: None)  # at a step boundary, as run()
        trainer.train_step()
    finally:
        for handle in [*counters, asker, *hooks]:
            handle.remove()
    wait_until(lambda: bool(seen))
    return seen


def count(counts: list[int], index: int, *_: object) -> None:
    counts[index] += 1


def test_a_prompt_asked_for_in_the_forward_pass_runs_before_the_next_block(
        corpus_file: Path, tmp_path: Path) -> None:
    trainer, _ = run_trainer(corpus_file, tmp_path / "run", max_iters=3)
    seen = prompt_in_the_middle(trainer, trainer.model.blocks[0], backward=False)
    assert seen == [{"weights_unchanged": True, "first_block_has_grads": False,
                     "first_block_ran": True, "second_block_ran": False}]
    assert trainer.step == 1  # and the step then finished


def test_a_prompt_asked_for_in_the_backward_pass_runs_before_the_optimizer_step(
        corpus_file: Path, tmp_path: Path) -> None:
    trainer, _ = run_trainer(corpus_file, tmp_path / "run", max_iters=3)
    # asked for as backward leaves the output head: let in at the last block's output gradient,
    # before backward reaches the first block
    seen = prompt_in_the_middle(trainer, trainer.model.lm_head, backward=True)
    assert seen == [{"weights_unchanged": True, "first_block_has_grads": False,
                     "first_block_ran": True, "second_block_ran": True}]
    assert trainer.step == 1


def test_a_prompt_cutting_in_changes_nothing_the_step_computes(corpus_file: Path,
                                                               tmp_path: Path) -> None:
    plain, _ = run_trainer(corpus_file, tmp_path / "plain", max_iters=3)
    for _ in range(2):
        plain.train_step()
    cut, _ = run_trainer(corpus_file, tmp_path / "cut", max_iters=3)
    prompt_in_the_middle(cut, cut.model.blocks[1], backward=True)
    prompt_in_the_middle(cut, cut.model.blocks[0], backward=False)
    for (name, a), b in zip(plain.model.state_dict().items(), cut.model.state_dict().values()):
        assert torch.equal(a, b), name
    assert any(not torch.equal(a, b) for a, b in zip(  # it did train
        plain.model.state_dict().values(), Trainer(plain.setup).model.state_dict().values()))


def test_the_apps_trainer_parks_between_blocks_only_while_it_runs(corpus_file: Path,
                                                                  tmp_path: Path) -> None:
    trainer, _ = run_trainer(corpus_file, tmp_path / "run", max_iters=2)
    app_trainer = Trainer(trainer.setup, prompts_cut_in=True)
    parked_at: list[int] = []
    app_trainer.control.let_holds_run = lambda: parked_at.append(app_trainer.step)  # type: ignore[method-assign]
    app_trainer.run()
    # the second step (no evaluation at step 1), two blocks: a look before each in forward;
    # in backward one before the last block, one between the two, one after the first
    assert parked_at.count(1) == 5
    assert all(not block._forward_pre_hooks and not block._forward_hooks
               for block in app_trainer.model.blocks)  # gone with the run
