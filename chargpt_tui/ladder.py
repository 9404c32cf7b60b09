"""Replaying the lecture: train its rungs (lecture.py) in order, each a normal run folder.

``chargpt-tui lecture`` drives a :class:`Ladder`; a view listens through :class:`LadderListener`
and to each rung's events on the shared bus. Every rung trains through the project's own
:class:`~chargpt_tui.train.Trainer` with the lecture's settings, so ``runs``, ``sample``,
``explain`` and ``--resume`` work on each rung's folder, and ``ladder.json`` in the ladder's
folder holds the table so far (rewritten after every rung).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import torch

from chargpt_tui.data import TokenizedData, encode_corpus, load_dataset, split_tokens
from chargpt_tui.device import pick_device
from chargpt_tui.durations import format_duration
from chargpt_tui.errors import ConfigError
from chargpt_tui.events import EventBus
from chargpt_tui.lecture import RUNGS, Rung, build_model, rung_named
from chargpt_tui.run_setup import RunSetup, default_out_dir, refuse_to_overwrite
from chargpt_tui.sampling import SamplingParams, prepare_prompt, stream_text
from chargpt_tui.tokenizer import CharTokenizer
from chargpt_tui.train import TrainConfig, Trainer, configure_optimizer

LADDER_NAME = "ladder.json"
SAMPLE_CHARS = 200

# The rungs before scaled are so small (≤ 42k parameters, 8 positions) that a second thread
# only adds synchronisation: on the loaded 2-core machine here, 30 steps of each took 25 s in all
# with one thread and 4m25s with torch's default two. Scaled gets every thread.
SMALL_RUNG_THREADS = 1

# What each rung costs at the lecture's length, relative to the bigram: how --time-budget is
# shared. (The scaled rung's cost is measured on the spot.)
# Seed 1337's rungs took 3.5, 9.5, 14.0, 12.2, 42.2 and 39.9 s on an idle 2-core AMD EPYC.
RELATIVE_COST = {"bigram": 1.0, "one-head": 2.7, "multi-head": 4.0, "feedforward": 3.5,
                 "residual": 12.0, "layernorm": 11.5}


def lecture_train_config(rung: Rung, seed: int, *, time_budget: float | None = None,
                         max_iters: int | None = None, eval_iters: int | None = None
                         ) -> TrainConfig:
    """The lecture's training: ``torch.optim.AdamW(lr)`` with its defaults (betas 0.9/0.999,
    weight decay 0.01), a constant learning rate (no warmup, no decay) and no gradient clipping.
    ``max_iters``/``eval_iters`` cap the lecture's numbers (a quick look, or a test)."""
    iters = rung.max_iters if max_iters is None else min(rung.max_iters, max_iters)
    return TrainConfig(
        max_iters=iters, batch_size=rung.batch_size, learning_rate=rung.learning_rate,
        min_lr=rung.learning_rate, warmup_iters=0, weight_decay=0.01, beta1=0.9, beta2=0.999,
        grad_clip=0.0, eval_interval=min(rung.eval_interval, iters),
        eval_iters=rung.eval_iters if eval_iters is None else min(rung.eval_iters, eval_iters),
        seed=seed,
        time_budget=time_budget)


def rungs_through(last: str) -> list[Rung]:
    """The rungs from the bigram up to and including ``last``."""
    rung_named(last)  # a clear error for an unknown name
    names = [rung.name for rung in RUNGS]
    return list(RUNGS[: names.index(last) + 1])


@dataclass
class RungResult:
    rung: str
    state: str  # finished, stopped or failed (the trainer's), or skipped
    val_loss: float | None  # the last evaluation's, as the lecture prints it
    lecture_val_loss: float
    parameters: int
    steps: int
    seconds: float  # wall time of the rung, evaluations included
    run_dir: str
    cpu_seconds: float = 0.0  # CPU time of the process meanwhile (all threads): on a busy
    #                           machine, about what the rung takes with its cores to itself
    adds: str = ""
    best_val_loss: float | None = None
    reason: str = ""
    sample: str = field(default="", repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k not in ("adds", "sample")}


@dataclass
class CostEstimate:
    """What a rung will cost on this device, from a few timed steps."""

    step_seconds: float
    eval_seconds: float  # one evaluation (eval_iters batches of each split)
    total_seconds: float  # the lecture's length: every step and evaluation
    eval_iters: int  # the batches per evaluation it will use (fewer to fit a short budget)


class LadderListener(Protocol):
    def rung_starting(self, rung: Rung, setup: RunSetup, trainer: Trainer,
                      estimate: CostEstimate | None) -> None: ...

    def rung_finished(self, result: RungResult) -> None: ...


def estimate_cost(rung: Rung, vocab_size: int, device: torch.device, eval_iters: int,
                  max_iters: int, timed_steps: int = 2) -> CostEstimate:
    """Time a few training steps and forward passes of ``rung`` at its real shape."""
    torch.manual_seed(0)
    model = build_model(rung.model_config(vocab_size), rung.name).to(device)
    config = lecture_train_config(rung, 0)
    optimizer = configure_optimizer(model, config, device)
    x = torch.randint(0, vocab_size, (rung.batch_size, rung.block_size), device=device)

    def step() -> None:
        _, loss = model(x, x)
        assert loss is not None
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def forward() -> None:
        with torch.no_grad():
            model(x, x)

    def timed(work: Any) -> float:
        work()  # warm-up (allocations, kernels)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        for _ in range(timed_steps):
            work()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return (time.perf_counter() - started) / timed_steps

    step_seconds = timed(step)
    model.eval()
    eval_seconds = 2 * eval_iters * timed(forward)
    evaluations = max_iters // min(rung.eval_interval, max_iters) + 1
    return CostEstimate(step_seconds, eval_seconds,
                        max_iters * step_seconds + evaluations * eval_seconds, eval_iters)


def fit_evaluations(estimate: CostEstimate, budget: float) -> CostEstimate:
    """Fewer batches per evaluation when the first and last evaluation would take more than a
    tenth of a short budget (on a CPU, 200 batches of the scaled rung take minutes)."""
    affordable = int(estimate.eval_iters * 0.05 * budget / estimate.eval_seconds)
    eval_iters = max(5, min(estimate.eval_iters, affordable))
    return replace(estimate, eval_iters=eval_iters,
                   eval_seconds=estimate.eval_seconds * eval_iters / estimate.eval_iters)


def default_ladder_dir(runs_root: Path = Path("runs")) -> Path:
    """runs/lecture-20261202-071600 (the run folders' time stamp, named for what it holds)."""
    fresh = default_out_dir(runs_root)
    return fresh.with_name(f"lecture-{fresh.name}")


def write_json_atomically(data: Any, path: Path) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=1)
            handle.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class Ladder:
    """The rungs ``through`` the named one, trained one after another on one corpus.

    ``max_iters`` caps every rung's steps, or (a mapping) the named rungs' only.

    ``time_budget`` (seconds) is shared out in proportion to :data:`RELATIVE_COST`, the scaled
    rung counting as much as all the others together; a rung that ends early leaves its time to
    the next. ``scaled_budget`` caps the scaled rung alone. :meth:`stop` (e.g. from a signal
    handler) stops the rung in training (its checkpoint is saved) and starts no other.
    ``prompts_cut_in``: the app's prompts may run inside a training step (see ``Trainer``).
    """

    def __init__(self, *, through: str, tokenizer: CharTokenizer, data: TokenizedData,
                 data_name: str, device: torch.device, out_dir: Path | None = None,
                 seed: int = 1337, time_budget: float | None = None,
                 scaled_budget: float | None = None,
                 max_iters: int | dict[str, int] | None = None,
                 eval_iters: int | None = None, threads: int | None = None,
                 bus: EventBus | None = None, prompts_cut_in: bool = False) -> None:
        self.rungs = rungs_through(through)
        for name, value in (("time budget", time_budget), ("scaled budget", scaled_budget)):
            if value is not None and value <= 0:
                raise ConfigError(f"{name} must be a positive duration, not {value}")
        self.tokenizer, self.data, self.data_name, self.device = (tokenizer, data, data_name,
                                                                  device)
        self.out_dir = out_dir or default_ladder_dir()
        for rung in self.rungs:
            refuse_to_overwrite(self.out_dir / rung.name, None)
        self.seed, self.time_budget, self.scaled_budget = seed, time_budget, scaled_budget
        self.max_iters, self.eval_iters = max_iters, eval_iters
        for rung in self.rungs:  # bad caps are reported before anything is written
            lecture_train_config(rung, seed, max_iters=self._cap(rung), eval_iters=eval_iters)
        self.threads = threads  # None: SMALL_RUNG_THREADS, and torch's default for scaled
        self.default_threads = torch.get_num_threads()
        self.bus = bus or EventBus()
        self.prompts_cut_in = prompts_cut_in
        self.results: list[RungResult] = []
        self.stopped: dict[str, Any] | None = None  # where a stop request left the ladder
        self._stop_request: tuple[str, int] | None = None
        self._trainer: Trainer | None = None
        self._budget_end: float | None = None

    def _cap(self, rung: Rung) -> int | None:
        if isinstance(self.max_iters, dict):
            return self.max_iters.get(rung.name)
        return self.max_iters

    # -- stopping ----------------------------------------------------------------------------

    def stop(self, reason: str, exit_code: int) -> None:
        """Stop the rung in training at its next step (it saves) and start no other."""
        self._stop_request = (reason, exit_code)
        trainer = self._trainer
        if trainer is not None:
            trainer.control.stop(reason, exit_code)

    @property
    def exit_code(self) -> int:
        return self._stop_request[1] if self._stop_request else 0

    # -- budgets -----------------------------------------------------------------------------

    def _weight(self, rung: Rung) -> float:
        if rung.name == "scaled":  # as much as the others together (all of it if alone)
            return sum(RELATIVE_COST[r.name] for r in self.rungs if r.name != "scaled") or 1.0
        return RELATIVE_COST[rung.name]

    def rung_budget(self, index: int, now: float) -> float | None:
        """The seconds rung ``index`` may take, starting ``now``."""
        rung = self.rungs[index]
        if rung.name == "scaled" and self.scaled_budget is not None:
            return self.scaled_budget
        if self._budget_end is None:
            return None
        shared = [r for r in self.rungs[index:]
                  if not (r.name == "scaled" and self.scaled_budget is not None)]
        share = self._weight(rung) / sum(self._weight(r) for r in shared)
        return max(1.0, (self._budget_end - now) * share)

    # -- the run -------------------------------------------------------------------------------

    def run(self, listener: LadderListener) -> list[RungResult]:
        """Train every rung in order (or until :meth:`stop`); returns the table's rows."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if self.time_budget is not None:
            self._budget_end = time.monotonic() + self.time_budget
        for index, rung in enumerate(self.rungs):
            if self._stop_request is not None:
                self.stopped = {"before": rung.name, "reason": self._stop_request[0]}
                break
            result = self._train_rung(index, rung, listener)
            self.results.append(result)
            self._write_table()
            listener.rung_finished(result)
            if result.state != "finished":
                self.stopped = {"during": rung.name, "step": result.steps,
                                "reason": result.reason}
                break
        self._write_table()
        return self.results

    def _train_rung(self, index: int, rung: Rung, listener: LadderListener) -> RungResult:
        torch.set_num_threads(self.threads or (
            self.default_threads if rung.name == "scaled" else SMALL_RUNG_THREADS))
        started, cpu_started = time.monotonic(), time.process_time()
        budget = self.rung_budget(index, started)
        config = lecture_train_config(rung, self.seed, time_budget=budget,
                                      max_iters=self._cap(rung), eval_iters=self.eval_iters)
        estimate = None
        if rung.name == "scaled" and self.device.type != "cuda":
            estimate = estimate_cost(rung, self.tokenizer.vocab_size, self.device,
                                     config.eval_iters, config.max_iters)
            if budget is not None:
                estimate = fit_evaluations(estimate, budget)
                config = replace(config, eval_iters=estimate.eval_iters)
            started, cpu_started = time.monotonic(), time.process_time()  # not the probe's
        setup = RunSetup(rung.model_config(self.tokenizer.vocab_size), config, self.tokenizer,
                         self.data, self.data_name, self.device, self.out_dir / rung.name,
                         preset="lecture", started=started, rung=rung.name)
        # the thread count set above stays: the small rungs' choice is measured (docs/lecture.md)
        trainer = Trainer(setup, self.bus, prompts_cut_in=self.prompts_cut_in,
                          pick_threads=rung.name == "scaled" and not self.threads)
        self._trainer = trainer
        if self._stop_request is not None:  # asked to stop while the rung was being built
            trainer.control.stop(*self._stop_request)
        try:
            listener.rung_starting(rung, setup, trainer, estimate)
            outcome = trainer.run()
        finally:
            self._trainer = None
        sample = ""
        if outcome.state == "finished":
            model, _ = trainer.snapshot()  # the best weights (the run ends on them)
            prompt = prepare_prompt(self.tokenizer, "\n", rung.block_size)
            sample = "".join(stream_text(model, self.tokenizer, prompt, SamplingParams(
                max_new_tokens=SAMPLE_CHARS, temperature=1.0, seed=self.seed)))
        return RungResult(
            rung=rung.name, state=outcome.state, val_loss=outcome.val_loss,
            lecture_val_loss=rung.lecture_val_loss, parameters=outcome.parameters,
            steps=outcome.step, seconds=time.monotonic() - started,
            cpu_seconds=time.process_time() - cpu_started, run_dir=str(setup.out_dir),
            adds=rung.adds, best_val_loss=outcome.best_val_loss, reason=outcome.reason,
            sample=sample)

    def table(self) -> dict[str, Any]:
        """What ``--json`` prints and ``ladder.json`` holds."""
        return {"rungs": [result.to_dict() for result in self.results],
                "stopped": self.stopped, "seed": self.seed, "device": str(self.device),
                "data": self.data_name, "out_dir": str(self.out_dir)}

    def _write_table(self) -> None:
        write_json_atomically(self.table(), self.out_dir / LADDER_NAME)


def format_seconds(value: float) -> str:
    """12.34 → '12.3s', 95.2 → '1m35s'."""
    return format_duration(round(value) if value >= 60 else round(value, 1))


def default_through(device_type: str) -> str:
    """The whole ladder on a GPU; on a CPU up to layernorm (scaled takes hours there)."""
    return "scaled" if device_type == "cuda" else "layernorm"


def cost_note(rung: Rung, estimate: CostEstimate, budget: float | None, device_type: str,
              stop_key: str) -> str:
    """What a rung will cost here (said before it starts), and how to stop or cap it."""
    cost = (f"{rung.name} on this {device_type.upper()}: "
            f"{estimate.step_seconds:.2f} s a step, so the lecture's "
            f"{rung.max_iters:,} steps would take about "
            f"{format_seconds(estimate.total_seconds)}")
    if budget is not None:
        return cost + (f"; it gets {format_duration(budget)} (about "
                       f"{int(budget / estimate.step_seconds):,} steps, "
                       f"{estimate.eval_iters} batches per evaluation)")
    return cost + f" — {stop_key} stops it and keeps it; --scaled-budget 10m caps it"


def stop_summary(ladder: Ladder) -> str | None:
    """Where a stopped ladder stopped, why, and which rungs are done (None: not stopped)."""
    stopped = ladder.stopped
    if stopped is None:
        return None
    where = (f"during {stopped['during']} at step {stopped['step']} (its checkpoint is "
             f"saved: --resume {ladder.out_dir / stopped['during']})"
             if "during" in stopped else f"before {stopped['before']}")
    done = [r.rung for r in ladder.results if r.state == "finished"]
    return f"{where}: {stopped['reason']}. Finished rungs: {', '.join(done) or 'none'}."


def prepare_ladder(*, through: str | None, data: str | None, encoding: str, device: str,
                   out: Path | None, seed: int, time_budget: float | None,
                   scaled_budget: float | None, max_iters: int | dict[str, int] | None,
                   eval_iters: int | None, threads: int | None,
                   progress: Callable[[int, int | None], None] | None,
                   notice: Callable[[str], None] | None, prompts_cut_in: bool = False) -> Ladder:
    """The ladder ready to run: its rungs checked, its text loaded and encoded, its folders
    free. Raises a UserError (before any data is loaded, for an unknown rung)."""
    torch_device = pick_device(device)
    through = through or default_through(torch_device.type)
    rungs_through(through)  # an unknown rung is reported before any data is loaded
    if notice is not None and through == "scaled" and torch_device.type != "cuda" and (
            scaled_budget is None and time_budget is None):
        notice("the scaled rung takes hours on a CPU; its cost is measured before it starts")
    source = load_dataset(data or "shakespeare", encoding=encoding, progress=progress,
                          notice=notice)
    encoded = encode_corpus(source, encoding, notice=notice)
    tokenizer = CharTokenizer(encoded.vocab)
    split = split_tokens(encoded.tokens, max(rung.block_size for rung in rungs_through(through)))
    return Ladder(through=through, tokenizer=tokenizer, data=split, data_name=source.name,
                  device=torch_device, out_dir=out, seed=seed, time_budget=time_budget,
                  scaled_budget=scaled_budget, max_iters=max_iters, eval_iters=eval_iters,
                  threads=threads, prompts_cut_in=prompts_cut_in)
