"""Training: the loop, its schedule, evaluation and checkpoints.

:class:`Trainer` runs on whatever thread calls :meth:`Trainer.run` (the CLI's main thread, or a
Textual worker) and publishes :mod:`~chargpt_tui.events` on a bus. Other threads steer it
through :class:`~chargpt_tui.control.TrainerControl`: pause, resume, save now, stop. Every
request is honoured at a step boundary, so checkpoints always hold a consistent model/optimizer
pair.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, cast

import torch
from torch.utils.hooks import RemovableHandle

from chargpt_tui import distributed, history
from chargpt_tui.checkpoint import FORMAT_VERSION, clean_stale_temp_files, save_checkpoint
from chargpt_tui.control import TrainerControl
from chargpt_tui.data import TokenizedData, get_batch
from chargpt_tui.device import (
    autocast_context,
    machine_load,
    pick_threads,
    thread_candidates,
    threads_given,
    use_tf32_matmuls,
)
from chargpt_tui.durations import format_duration
from chargpt_tui.errors import CheckpointError, ConfigError, UserError
from chargpt_tui.events import (
    CheckpointSaved,
    EvalDone,
    EvalProgress,
    EventBus,
    Notice,
    SampleChunk,
    StateChanged,
    StepDone,
    TrainingStarted,
)
from chargpt_tui.lecture import build_model
from chargpt_tui.model import GPTConfig, GPTLanguageModel, fused_copy, iter_decay_groups
from chargpt_tui.optim import Muon, MuonWithAdamW
from chargpt_tui.presets import recipe_of
from chargpt_tui.runs import (
    BEST_NAME,
    CHECKPOINT_NAME,
    METRICS_NAME,
    MetricsWriter,
    point_latest_at,
)
from chargpt_tui.sampling import SamplingParams, stream_tokens
from chargpt_tui.tokenizer import CharTokenizer

OPTIMIZERS = ("adamw", "muon")
UNBOUNDED_STEPS = 10**9  # max_iters of a run that its time budget ends
PACE_STEPS = 5  # steps timed before a time budget's step count is estimated
FEW_STEPS = 50  # a budgeted run that trained fewer says why
SCHEDULES = ("cosine", "wsd")
PRECISIONS = ("auto", "bf16", "fp32")


@dataclass
class TrainConfig:
    max_iters: int = 5000
    batch_size: int = 12
    learning_rate: float = 1e-3
    min_lr: float | None = None  # end of the cosine; default learning_rate / 10
    warmup_iters: int = 100
    lr_decay_iters: int | None = None  # where the cosine ends; default max_iters
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.99  # nanoGPT's choice for small char models (few tokens per step)
    grad_clip: float = 1.0  # 0 = off
    grad_accum_steps: int = 1
    eval_interval: int = 250
    eval_iters: int = 20
    sample_interval: int = 0  # steps between live samples (0 = none)
    sample_chars: int = 200
    seed: int = 1337
    compile: bool = False
    # -- the fast recipe's parts; the defaults are the lecture's (docs/recipe.md has the figures) --
    optimizer: str = "adamw"  # "muon": Muon for the blocks' matrices, AdamW for the rest: -0.12 val
    muon_lr: float = 0.02  # Muon's peak learning rate (the cpu preset: 0.03 at batch 24)
    muon_momentum: float = 0.95
    schedule: str = "cosine"  # "wsd": warmup, flat, linear cooldown; = cosine at equal tokens,
    #                           and it fits a time budget (no run length needed in advance)
    cooldown_frac: float = 0.4  # wsd: the share of the run spent cooling down to min_lr
    patience: int = 0  # stop after this many evaluations without a new best val (0 = never)
    time_budget: float | None = None  # seconds for the whole command; the schedule fits inside
    precision: str = "auto"  # auto: bf16 autocast on CUDA, fp32 on CPU; "bf16" also on CPU
    history_keep: int = 12  # weight snapshots kept in history/ for the views to step through

    def __post_init__(self) -> None:
        positive = ("max_iters", "batch_size", "eval_interval", "eval_iters", "grad_accum_steps")
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"{name.replace('_', '-')} must be at least 1, not "
                                  f"{getattr(self, name)}")
        if not 0 < self.learning_rate < math.inf:
            raise ConfigError(f"learning-rate must be a positive number, not {self.learning_rate}")
        if not 0 <= self.seed < 2**63:
            raise ConfigError(f"seed must be between 0 and 2**63 - 1, not {self.seed}")
        for name in ("warmup_iters", "weight_decay", "grad_clip", "sample_interval",
                     "history_keep"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name.replace('_', '-')} must not be negative")
        if self.lr_decay_iters is not None and self.lr_decay_iters < 1:
            raise ConfigError("lr-decay-iters must be at least 1")
        for name, allowed in (("optimizer", OPTIMIZERS), ("schedule", SCHEDULES),
                              ("precision", PRECISIONS)):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name} {getattr(self, name)!r} is not one of "
                                  f"{', '.join(allowed)}")
        if not 0 < self.muon_lr < math.inf or not 0 <= self.muon_momentum < 1:
            raise ConfigError("muon-lr must be positive and muon-momentum in [0, 1)")
        if not 0 <= self.cooldown_frac <= 1:
            raise ConfigError(f"cooldown-frac must be between 0 and 1, not {self.cooldown_frac}")
        if self.patience < 0:
            raise ConfigError("patience must be 0 (off) or more")
        if self.time_budget is not None and not 0 < self.time_budget < math.inf:
            raise ConfigError(f"time budget must be a positive duration, not {self.time_budget}",
                              "use e.g. --time-budget 5m or 90s")

    @property
    def final_lr(self) -> float:
        return self.learning_rate / 10 if self.min_lr is None else self.min_lr

    @property
    def decay_iters(self) -> int:
        return self.lr_decay_iters or self.max_iters


def get_lr(step: int, config: TrainConfig, progress: float | None = None) -> float:
    """Linear warmup, then cosine decay to ``final_lr`` at ``decay_iters``, then flat.

    Warmup avoids huge early updates while Adam's moment estimates are still noise.
    ``schedule="wsd"`` (warmup–stable–decay) holds the peak and decays linearly over the last
    ``cooldown_frac`` of the run: the flat part needs no knowledge of the run's length, so a
    run measured in *time* (``progress``: the share of the time budget used) fits it exactly.
    Under a time budget the warmup also ends after 5% of the time: a slow machine that allows
    few steps should not spend them all warming up.
    """
    if step < config.warmup_iters:
        warm = (step + 1) / (config.warmup_iters + 1)
        if progress is not None:  # a time budget: warm up over a small share of the time at most
            warm = max(warm, progress / TimeBudget.WARMUP_SHARE)
        if warm < 1.0:
            return config.learning_rate * warm
    if progress is None:
        progress = min(1.0, (step - config.warmup_iters)
                       / max(1, config.decay_iters - config.warmup_iters))
    if config.schedule == "wsd":
        cooldown = min(1.0, max(0.0, (progress - 1 + config.cooldown_frac)
                                / max(config.cooldown_frac, 1e-9)))
        return config.learning_rate + cooldown * (config.final_lr - config.learning_rate)
    if progress >= 1.0:
        return config.final_lr
    coeff = 0.5 * (1.0 + math.cos(math.pi * progress))  # 1 → 0
    return config.final_lr + coeff * (config.learning_rate - config.final_lr)


def fused_adamw(device: torch.device) -> bool | None:
    """AdamW as one kernel over all parameters rather than a Python loop over them: on CUDA, and
    on the CPU since torch 2.4 (the lecture's small models have dozens of tiny tensors, and the
    loop cost their steps up to a third: docs/lecture.md). None: torch's own choice."""
    if device.type == "cuda":
        return True
    major, minor = (int(part) for part in torch.__version__.split(".")[:2])
    return True if device.type == "cpu" and (major, minor) >= (2, 4) else None


def configure_optimizer(model: GPTLanguageModel, config: TrainConfig, device: torch.device
                        ) -> torch.optim.AdamW | MuonWithAdamW:
    """AdamW with weight decay on weight matrices only (see :func:`iter_decay_groups`); with
    ``optimizer="muon"``, the blocks' matrices go to Muon instead and AdamW keeps the rest.

    The schedule scales every group alike, from its own peak (see :meth:`Trainer.train_step`).
    """
    params = dict(model.named_parameters())
    muon = {name for name, param in params.items()
            if config.optimizer == "muon" and name.startswith("blocks.") and param.dim() == 2}
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for name, wants_decay in iter_decay_groups(model):
        if name not in muon:
            (decay if wants_decay else no_decay).append(params[name])
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    adamw = torch.optim.AdamW(groups, lr=config.learning_rate,
                              betas=(config.beta1, config.beta2), fused=fused_adamw(device))
    if not muon:
        return adamw
    hidden = [params[name] for name in params if name in muon]
    # "muon" marks the group (it survives checkpoints): its peak is muon_lr, not learning_rate
    return MuonWithAdamW(Muon([{"params": hidden, "muon": True}],
                              lr=config.muon_lr, momentum=config.muon_momentum), adamw)


@torch.no_grad()
def estimate_loss(model: torch.nn.Module, data: TokenizedData, block_size: int, batch_size: int,
                  eval_iters: int, device: torch.device, seed: int, precision: str = "auto",
                  between_batches: Callable[[], None] | None = None) -> dict[str, float]:
    """Mean loss over ``eval_iters`` random batches of each split, in eval mode (no dropout).

    Uses its own generator with a fixed seed: every evaluation sees the same batches (so curves
    compare like with like) and evaluating never shifts the training batches.
    ``between_batches`` runs after each batch (the trainer lets a waiting prompt in there).
    """
    was_training = model.training
    model.eval()
    out = {}
    for split in ("train", "val"):
        generator = torch.Generator().manual_seed(seed)
        losses = torch.zeros(eval_iters)
        for k in range(eval_iters):
            x, y = get_batch(getattr(data, split), block_size, batch_size, generator)
            with autocast_context(device, precision):
                _, loss = model(x.to(device), y.to(device))
            losses[k] = loss.item()
            if between_batches is not None:
                between_batches()
        out[split] = losses.mean().item()
    model.train(was_training)
    return out


class TimeBudget:
    """A wall-clock budget for a whole command, turned into the schedule's progress (0 → 1).

    Counted from when the command started (``RunSetup.started``), so start-up and data loading
    are inside it; time spent paused (or holding for a prompt) is given back; the last evaluation,
    live sample and save get a reserve sized from the latest ones, so the command ends on time.

    It also paces the run's checks by the clock, not by steps: an evaluation (and a live
    sample) every ``every`` seconds, together costing at most ``EVAL_SHARE`` of the budget.
    """

    EVAL_SHARE = 0.10  # of the budget, for all evaluations together
    WARMUP_SHARE = 0.05  # warmup ends after warmup_iters steps or this share of the time
    SAMPLE_SHARE = 0.03  # the most one live sample may take (it stops there)

    def __init__(self, seconds: float, started: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.seconds = seconds
        self.started = started
        self.end = started + seconds
        self.training_from = clock()
        self.reserve = 0.0
        self.paused = 0.0
        self.every = min(30.0, max(20.0, seconds / 10))  # seconds between evaluations
        self.checked_at = self.training_from

    def start_training(self, evaluation_seconds: float) -> None:
        self.training_from = self.checked_at = self.clock()
        self.plan_the_end(evaluation_seconds)

    def plan_the_end(self, seconds: float, step_seconds: float = 0.0) -> None:
        """Reserve time for the last evaluation and sample (as long as the latest ones took),
        the step that may still be running when the time is up, the save and the exit."""
        self.reserve = 1.5 * seconds + step_seconds + 0.5

    def give_back(self, seconds: float) -> None:
        self.paused += seconds

    def usable(self) -> float:
        return self.end - self.reserve - self.training_from

    def progress(self) -> float:
        used = self.clock() - self.training_from - self.paused
        return 1.0 if self.usable() <= 0 else min(1.0, used / self.usable())

    def used(self) -> float:
        """Wall-clock seconds of the budget spent so far (pauses excluded): the budget clock."""
        return max(0.0, self.clock() - self.started - self.paused)

    def evaluation_due(self) -> bool:
        return self.clock() - self.checked_at >= self.every

    def evaluated(self) -> None:
        self.checked_at = self.clock()

    def eval_iters(self, batch_seconds: float, most: int) -> int:
        """Batches per split for each evaluation, so that all of them (one every ``every``
        seconds, one at the start and one at the end) fit in ``EVAL_SHARE`` of the budget."""
        evaluations = self.seconds // self.every + 2
        per_evaluation = self.EVAL_SHARE * self.seconds / evaluations
        return max(1, min(most, int(per_evaluation / (2 * max(batch_seconds, 1e-6)))))


@dataclass
class RunTally:
    """What one call of :meth:`Trainer.run` has done so far, and how it ended."""

    tokens_per_step: int
    started: float = 0.0  # the trainer's clock when run() began
    paused: float = 0.0  # seconds parked (paused by the user, or holding for a prompt)
    train_time: float = 0.0  # seconds inside optimizer steps
    steps: int = 0
    trained_tokens: int = 0
    eval_seconds: float = 0.0  # the latest evaluation's and live sample's cost
    sample_seconds: float = 0.0
    sampled_at: int = -1
    picked_at: float | None = None  # when torch's threads were last picked (None: not picked)
    pace_after_pick: float | None = None  # the step time just after that
    picked_by_load: bool = False  # by the load average, not by timing
    step_time_ema: float | None = None
    last_loss: float | None = None
    saved_at: int = -1
    evaluated_at: int = -1
    state: str = "finished"  # finished / stopped / failed
    reason: str = ""

    def threads_picked(self, now: float, by_load: bool) -> None:
        self.picked_at, self.pace_after_pick, self.picked_by_load = now, None, by_load

    def pace_dropped(self, now: float) -> bool:
        """Time to pick threads again: steps take over twice as long as just after the last
        pick (at most one look every 30 s), or a pick made by the load is a minute old."""
        if self.step_time_ema is None or self.picked_at is None:
            return False
        if self.picked_by_load:
            return now - self.picked_at > 60
        if self.pace_after_pick is None:
            if self.steps >= PACE_STEPS:
                self.pace_after_pick = self.step_time_ema
            return False
        return self.step_time_ema > 2 * self.pace_after_pick and now - self.picked_at > 30

    def add_step(self, seconds: float, loss: float) -> None:
        self.train_time += seconds
        self.steps += 1
        self.trained_tokens += self.tokens_per_step
        self.step_time_ema = (seconds if self.step_time_ema is None
                              else 0.9 * self.step_time_ema + 0.1 * seconds)
        self.last_loss = loss


class StopRules:
    """When a run ends by itself: its time budget is used, its val loss stopped improving
    (patience), or its loss is no longer a number. (``max_iters`` is the loop's own bound.)

    ``finishing`` records that the run itself decided to end, so the stop that follows counts
    as finished, not as stopped by the user.
    """

    def __init__(self, config: TrainConfig) -> None:
        self.config = config
        self.finishing = False

    def out_of_time(self, progress: float | None) -> str | None:
        if progress is None or progress < 1.0:
            return None
        self.finishing = True
        return f"time budget of {format_duration(self.config.time_budget or 0)} used"

    def patience_used(self, trainer: Trainer) -> str | None:
        patience = self.config.patience
        if not patience or trainer.evals_since_best < patience:
            return None
        self.finishing = True
        return (f"early stop: val has not improved for {patience} evaluations (best "
                f"{trainer.best_val_loss:.4f} at step {trainer.best_step})")

    @staticmethod
    def bad_loss(loss: float, step: int, checkpoint_kept: bool) -> str | None:
        if math.isfinite(loss):
            return None
        kept = ("kept the last good checkpoint" if checkpoint_kept
                else "no checkpoint had been saved yet")
        return (f"loss became {loss} at step {step}; stopped and {kept} — "
                "try a lower --learning-rate")


def few_steps_hint(tally: RunTally, budget: TimeBudget) -> str:
    """Why a time-budgeted run trained so few steps, and what to do about it."""
    step_seconds = tally.train_time / tally.steps if tally.steps else 0.0
    start_up = budget.training_from - budget.started
    load, cores = machine_load()
    causes = [f"each step took {step_seconds:.2f} s" if tally.steps else "no step fitted"]
    if start_up > 0.3 * budget.seconds:
        causes.append(f"start-up and the first evaluation took {start_up:.0f} s")
    if load > cores:
        causes.append(f"the machine is busy (load average {load:.1f} on {cores} cores)")
    advice = "give it a longer --time-budget or a smaller model (--preset tiny)"
    if load > cores and torch.get_num_threads() > 1:
        advice += ", or try --threads 1"
    return (f"only {tally.steps} steps trained in {format_duration(budget.seconds)}: "
            f"{'; '.join(causes)} — {advice}")


@dataclass
class TrainResult:
    state: str  # finished / stopped / failed
    step: int
    train_loss: float | None
    val_loss: float | None
    best_val_loss: float | None
    tokens_per_second: float
    checkpoint: str | None
    device: str
    parameters: int
    elapsed: float
    reason: str = ""
    exit_code: int = 0
    best_step: int | None = None  # the step best.pt (and the in-memory model at the end) is from

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RunSetup:
    """Everything a :class:`Trainer` starts from (``run_setup.prepare_run`` builds it)."""

    model_config: GPTConfig
    train_config: TrainConfig
    tokenizer: CharTokenizer
    data: TokenizedData
    data_name: str
    device: torch.device
    out_dir: Path
    preset: str
    resume: dict[str, Any] | None = None
    notices: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)  # when the command began: budgets
    rung: str | None = None  # a lecture rung's model (lecture.py) instead of GPTLanguageModel

    @property
    def recipe(self) -> str:
        """``lecture``, ``fast`` or ``custom``: which recipe the resolved settings match."""
        return recipe_of({**self.model_config.to_dict(), **asdict(self.train_config)})


def park_between_blocks(model: torch.nn.Module, control: TrainerControl) -> list[RemovableHandle]:
    """Let a waiting prompt run between any two blocks of a training step, forward or backward.

    The weights change only in the optimizer step, so until then a prompt may copy them and
    answer while the step waits at the next block: a few milliseconds instead of the rest of
    the step. The step itself computes exactly what it would have. Only the thread that
    registered the hooks parks: a copy of the model (a prompt's snapshot) carries them along.
    """
    trainer_thread = threading.get_ident()

    def park(*_: object) -> None:
        if threading.get_ident() == trainer_thread:
            control.let_holds_run()

    def park_in_backward(value: object) -> None:
        hidden = value[0] if isinstance(value, tuple) else value
        if isinstance(hidden, torch.Tensor) and hidden.requires_grad:
            hidden.register_hook(park)  # runs when backward reaches this tensor

    def before_block(_block: torch.nn.Module, inputs: tuple[object, ...]) -> None:
        park()
        park_in_backward(inputs)  # in backward: once this block is done

    blocks = list(getattr(model, "blocks", ()))  # the lecture's first rungs have no blocks
    hooks = [block.register_forward_pre_hook(before_block) for block in blocks]
    if blocks:  # in backward: before the last block starts
        hooks.append(blocks[-1].register_forward_hook(
            lambda _block, _inputs, output: park_in_backward(output)))
    return hooks


class Trainer:
    """Owns model, optimizer, data RNG and step counter; :meth:`run` trains to ``max_iters``."""

    def __init__(self, setup: RunSetup, bus: EventBus | None = None,
                 prompts_cut_in: bool = False, pick_threads: bool = True) -> None:
        self.setup = setup
        self.bus = bus or EventBus()
        self.control = TrainerControl()
        self.device = setup.device
        if self.device.type == "cuda":
            use_tf32_matmuls()
        self.mconf, self.tconf = setup.model_config, setup.train_config
        self.out_dir = setup.out_dir
        self.checkpoint_path = self.out_dir / CHECKPOINT_NAME
        self.data = setup.data
        self.dist = distributed.current()  # None unless launched by torchrun
        self.is_main = self.dist is None or self.dist.is_main
        rank = self.dist.rank if self.dist else 0

        torch.manual_seed(self.tconf.seed)  # same seed → same initial weights (on every rank)
        self.model = build_model(self.mconf, setup.rung).to(self.device)
        self.optimizer = configure_optimizer(self.model, self.tconf, self.device)
        # each rank its own batches and dropout masks; rank 0 matches a single process exactly
        self.data_generator = torch.Generator().manual_seed(self.tconf.seed + rank)
        if rank:
            torch.manual_seed(self.tconf.seed + rank)
        self.step = 0
        self.best_val_loss: float | None = None
        self.best_step: int | None = None
        self._best_weights: dict[str, torch.Tensor] | None = None  # kept in memory, see evaluate
        self.evals_since_best = 0
        self.last_eval: dict[str, float] | None = None
        self.eval_iters = self.tconf.eval_iters  # batches per split; a time budget may shrink it
        if setup.resume is not None:
            self._restore(setup.resume)
        self.train_model: torch.nn.Module = self.model
        if self.tconf.compile:
            self.train_model = cast(torch.nn.Module, torch.compile(self.model))
        if self.dist:
            self.train_model = distributed.wrap_model(self.dist, self.train_model)
        self._weights_lock = threading.Lock()  # held while weights change (for snapshots)
        # The app: a waiting prompt may run between any two blocks of a step, not only between
        # steps (see park_between_blocks). Not under torch.compile (a hook there breaks the graph)
        # or torchrun (the other ranks would wait at the gradient all-reduce).
        self.prompts_cut_in = prompts_cut_in and not self.tconf.compile and self.dist is None
        # False: the caller set torch's threads for this run (the lecture's small rungs: one).
        self.pick_threads = pick_threads
        self.clock: Callable[[], float] = time.monotonic  # what a time budget is measured by

    # -- checkpoints ---------------------------------------------------------------------------

    def _restore(self, payload: dict[str, Any]) -> None:
        try:
            self.model.load_state_dict(payload["model"])
            if "optimizer" in payload:
                self.optimizer.load_state_dict(payload["optimizer"])
            rng = payload.get("rng", {})
            if "torch" in rng:
                torch.set_rng_state(rng["torch"])
            if "data" in rng:
                self.data_generator.set_state(rng["data"])
            if "cuda" in rng and self.device.type == "cuda":
                torch.cuda.set_rng_state(rng["cuda"], self.device)
        except (RuntimeError, ValueError, KeyError, TypeError) as error:
            first = str(error).strip().splitlines()[0][:160]
            raise CheckpointError(f"checkpoint does not fit this model: {first}") from None
        self.step = int(payload["step"])
        self.best_val_loss = payload.get("best_val_loss")
        self.best_step = payload.get("best_step")
        self.evals_since_best = int(payload.get("evals_since_best", 0))
        if self.dist:
            self._restore_rank_rng(payload.get("distributed", {}).get("rank_rng"))

    def _restore_rank_rng(self, rank_rng: list[dict[str, Any]] | None) -> None:
        """Under torchrun, continue this rank's own random streams from the checkpoint."""
        assert self.dist is not None
        if rank_rng is not None and len(rank_rng) == self.dist.world_size:
            own = rank_rng[self.dist.rank]
            torch.set_rng_state(own["torch"])
            self.data_generator.set_state(own["data"])
            if "cuda" in own and self.device.type == "cuda":
                torch.cuda.set_rng_state(own["cuda"], self.device)
        elif self.dist.rank:  # saved by another number of processes: fresh streams, not repeats
            seed = self.tconf.seed + self.dist.rank + 1_000_003 * self.step
            torch.manual_seed(seed)
            self.data_generator.manual_seed(seed)
        elif self.step:
            saved_by = len(rank_rng) if rank_rng else 1
            self.setup.notices.append(
                f"the checkpoint was saved by {saved_by} process(es), this run has "
                f"{self.dist.world_size}: ranks after 0 start new batch streams")

    def weights_payload(self) -> dict[str, Any]:
        """What sampling needs: weights, shape, vocabulary, step and losses (no collectives)."""
        return {
            "format_version": FORMAT_VERSION,
            "model_config": self.mconf.to_dict(),
            "train_config": asdict(self.tconf),
            "preset": self.setup.preset,
            "vocab": self.setup.tokenizer.vocab,
            "data": self.setup.data_name,
            "model": self.model.state_dict(),  # the uncompiled module: no "_orig_mod." prefixes
            "step": self.step,
            "best_val_loss": self.best_val_loss,
            "best_step": self.best_step,
            "evals_since_best": self.evals_since_best,
            "last_eval": self.last_eval,
            "torch_version": str(torch.__version__),
            **({"rung": self.setup.rung} if self.setup.rung else {}),  # rebuilds the rung's model
        }

    def checkpoint_payload(self) -> dict[str, Any]:
        """Everything to resume exactly: weights plus optimizer state and RNG states."""
        rng = {"torch": torch.get_rng_state(), "data": self.data_generator.get_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        extra = {"distributed": self._distributed_record(rng)} if self.dist else {}
        return {**self.weights_payload(), "optimizer": self.optimizer.state_dict(), "rng": rng,
                **extra}

    def _distributed_record(self, rng: dict[str, Any]) -> dict[str, Any]:
        """Every rank's RNG states and step, and how far the replicas drifted apart.

        A collective call: under torchrun every rank builds the payload, only rank 0 writes it.
        """
        assert self.dist is not None
        states = distributed.gather_rank_states(self.dist,
                                                {**rng, "step": torch.tensor(self.step)})
        drift = distributed.max_parameter_drift(self.dist, self.model)
        if drift and self.is_main:
            self.bus.publish(Notice(f"the {self.dist.world_size} processes' weights differ by "
                                    f"up to {drift:.3g}: a synchronisation bug", level="error"))
        return {
            "world_size": self.dist.world_size,
            "rank_steps": [int(state.pop("step")) for state in states],
            "rank_rng": states,
            "max_parameter_drift": drift,
        }

    def save(self, reason: str) -> Path:
        payload = self.checkpoint_payload()
        if not self.is_main:  # it took part in building the payload; rank 0 writes it
            return self.checkpoint_path
        save_checkpoint(payload, self.checkpoint_path)
        self.bus.publish(CheckpointSaved(self.step, str(self.checkpoint_path), reason))
        return self.checkpoint_path

    def save_best(self) -> None:
        """Keep the weights with the lowest validation loss in ``best.pt`` (no optimizer state:
        it is for sampling; ``ckpt.pt`` stays the file to resume from)."""
        save_checkpoint(self.weights_payload(), self.out_dir / BEST_NAME)

    # -- snapshots for sampling while training -------------------------------------------------

    def snapshot(self) -> tuple[GPTLanguageModel, int]:
        """A fused, eval-mode copy of the current weights and the step they come from.

        Taken between optimizer steps (under a lock), so it never sees half-updated weights.
        """
        with self._weights_lock:
            return fused_copy(self.model), self.step

    # -- the loop --------------------------------------------------------------------------------

    def evaluate(self) -> dict[str, float]:
        if not self.is_main:  # the other ranks wait for rank 0 at the next collective call
            return {}
        self.bus.publish(StateChanged("evaluating"))
        total, done, shown_at = 2 * self.eval_iters, 0, -math.inf

        def between_batches() -> None:  # progress a few times a second, and a prompt let in
            nonlocal done, shown_at
            done += 1
            if done == total or time.monotonic() - shown_at >= 0.25:
                shown_at = time.monotonic()
                self.bus.publish(EvalProgress(self.step, done, total))
            self.control.let_holds_run()

        # the unwrapped module: a forward through DDP on rank 0 alone would wait for the others
        losses = estimate_loss(distributed.unwrap(self.train_model), self.data,
                               self.mconf.block_size, self.tconf.batch_size, self.eval_iters,
                               self.device, self.tconf.seed, self.tconf.precision,
                               between_batches=between_batches)
        self.last_eval = losses
        if self.best_val_loss is None or losses["val"] < self.best_val_loss:
            self.best_val_loss, self.best_step = losses["val"], self.step
            self.evals_since_best = 0
            # A copy in memory too: when the run ends, the model goes back to these weights.
            self._best_weights = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
            self.save_best()
        else:
            self.evals_since_best += 1
        if problem := history.record(self.out_dir, self.weights_payload(), self.tconf.history_keep):
            self.bus.publish(Notice(problem))
        self.bus.publish(EvalDone(self.step, losses["train"], losses["val"], self.best_val_loss,
                                  self.best_step))
        self.bus.publish(StateChanged("training"))
        return losses

    def time_one_eval_batch(self) -> float:
        """Seconds one evaluation batch takes now: what a time budget sizes eval_iters from."""
        x, y = get_batch(self.data.val, self.mconf.block_size, self.tconf.batch_size,
                         torch.Generator().manual_seed(self.tconf.seed))
        was_training = self.model.training
        self.model.eval()
        started = time.perf_counter()
        with torch.no_grad(), autocast_context(self.device, self.tconf.precision):
            _, loss = self.model(x.to(self.device), y.to(self.device))
            loss.item()  # waits for the device
        self.model.train(was_training)
        return time.perf_counter() - started

    def restore_best(self) -> bool:
        """Put the best-validation weights back into the model (after the run): what the user
        samples from is then never worse than the best the run saw. False if already there."""
        if self._best_weights is None or self.best_step == self.step:
            return False
        with self._weights_lock:
            self.model.load_state_dict(self._best_weights)
        return True

    def live_sample(self, stoppable: bool = True, deadline: float = math.inf) -> None:
        """Stream a short sample from the current weights (seeded by the step: reproducible).

        A stop request cuts it short, unless ``stoppable`` is False (the sample that ends a run
        by its own decision, e.g. its time budget, is part of the run); so does ``deadline`` (on
        the trainer's clock: a time budget's share for it)."""
        if not self.is_main:
            return
        model, step = self.snapshot()
        start = [self.setup.tokenizer.stoi.get("\n", 0)]
        params = SamplingParams(max_new_tokens=self.tconf.sample_chars, temperature=0.8,
                                top_k=None, seed=step)
        try:
            for token in stream_tokens(model, start, params):
                self.bus.publish(SampleChunk(step, self.setup.tokenizer.vocab[token]))
                if (stoppable and self.control.stopping) or self.clock() > deadline:
                    break
                self.control.let_holds_run()  # a prompt typed now need not wait for the sample
        finally:  # a sample that fails still ends (views wait for its end)
            self.bus.publish(SampleChunk(step, "", final=True))

    def _batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = get_batch(self.data.train, self.mconf.block_size, self.tconf.batch_size,
                         self.data_generator)
        if self.device.type == "cuda":  # pinned memory lets the copy overlap with compute
            return (x.pin_memory().to(self.device, non_blocking=True),
                    y.pin_memory().to(self.device, non_blocking=True))
        return x.to(self.device), y.to(self.device)

    def train_step(self, progress: float | None = None) -> float:
        """One optimizer step (with gradient accumulation); returns the mean loss.

        ``progress`` (0..1) places a time-budgeted run on its schedule; else the step does.
        """
        lr = get_lr(self.step, self.tconf, progress)
        scale = lr / self.tconf.learning_rate
        for group in self.optimizer.param_groups:  # Muon's group peaks at muon_lr
            peak = self.tconf.muon_lr if group.get("muon") else self.tconf.learning_rate
            group["lr"] = peak * scale
        total = 0.0
        accum = self.tconf.grad_accum_steps
        for micro_step in range(accum):
            x, y = self._batch()
            with distributed.gradient_sync(self.train_model, micro_step == accum - 1):
                with autocast_context(self.device, self.tconf.precision):
                    _, loss = self.train_model(x, y)
                (loss / accum).backward()
            total += loss.item()
        loss_value = total / self.tconf.grad_accum_steps
        if self.dist:  # all ranks must agree on a non-finite loss, or one stops and one waits
            loss_value = distributed.mean_over_ranks(self.dist, loss_value)
        if not math.isfinite(loss_value):
            self.optimizer.zero_grad(set_to_none=True)
            return loss_value
        if self.tconf.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.tconf.grad_clip)
        with self._weights_lock:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return loss_value

    def _with_compile_fallback(self, work: Callable[[], Any]) -> Any:
        """Run the first work of the compiled model (the first evaluation or step): if
        torch.compile fails there, say so and redo it eagerly."""
        try:
            return work()
        except (KeyboardInterrupt, UserError):
            raise
        except Exception as error:  # noqa: BLE001 - any compiler failure means "run eager"
            if self.train_model is self.model:
                raise
            self.bus.publish(Notice(f"torch.compile failed ({type(error).__name__}); "
                                    "training without it"))
            self.train_model = self.model
            self.optimizer.zero_grad(set_to_none=True)
            return work()

    def run(self) -> TrainResult:
        """Train until ``max_iters``, a stop request, or a non-finite loss."""
        if not self.is_main:  # under torchrun only rank 0 touches the run folder
            try:
                return self._run()
            finally:
                self.control.mark_idle()
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise CheckpointError(f"cannot create run folder {self.out_dir}: {error.strerror}",
                                  "pass a writable --out") from None
        clean_stale_temp_files(self.out_dir)
        point_latest_at(self.out_dir)
        try:
            metrics = MetricsWriter(self.out_dir / METRICS_NAME)
        except OSError as error:
            raise CheckpointError(f"cannot write {self.out_dir / METRICS_NAME}: "
                                  f"{error.strerror or error}", "pass a writable --out") from None
        unsubscribe = self.bus.subscribe(metrics)
        hooks = park_between_blocks(self.model, self.control) if self.prompts_cut_in else []
        try:
            return self._run()
        finally:
            self.control.mark_idle()
            for hook in hooks:
                hook.remove()
            unsubscribe()
            metrics.close()

    def _requests(self) -> tuple[bool, bool]:
        """(stop, save) requests; under torchrun agreed by all ranks, so all act at one step."""
        control = self.control
        save = control.take_save_request()
        if self.dist is None:
            return control.stopping, save
        stop_code = control.exit_code if control.stopping else None
        agreed_code, save = distributed.agree_on_requests(self.dist, stop_code, save)
        if agreed_code is not None and not control.stopping:
            control.stop("another process of the run was stopped", agreed_code)
        return agreed_code is not None, save

    def _run(self) -> TrainResult:
        tconf, control = self.tconf, self.control
        self._announce()
        self.model.train()
        tally = RunTally(tokens_per_step=tconf.batch_size * self.mconf.block_size
                         * tconf.grad_accum_steps * (self.dist.world_size if self.dist else 1),
                         started=self.clock())
        control.clock = self.clock  # parked time and the budget on one clock
        self._pick_threads(tally)
        budget = self._first_evaluation(tally)
        rules = StopRules(tconf)
        self.bus.publish(StateChanged("training"))
        while self.step < tconf.max_iters:
            stop_requested, save_requested = self._requests()
            if stop_requested:
                tally.state = ("finished" if rules.finishing and control.exit_code == 0
                               else "stopped")
                tally.reason = control.stop_reason
                break
            if save_requested:
                self.save("requested")
                tally.saved_at = self.step
                control.rearm()  # back to paused/held if the save request woke the loop
            if not self._wait_until_runnable(budget, tally):
                continue
            progress = budget.progress() if budget else None
            if reason := rules.out_of_time(progress):
                control.stop(reason, 0)  # stops every process at the same step, via _requests
                continue
            loss = self._timed_step(progress, tally)
            if reason := rules.bad_loss(loss, self.step + 1, self.checkpoint_path.exists()):
                tally.state, tally.reason = "failed", reason
                self.bus.publish(Notice(reason, level="error"))
                break
            self._report_step(loss, progress, budget, tally)
            if tally.pace_dropped(self.clock()):
                self._pick_threads(tally)
            if self._evaluation_due(budget):
                self._evaluate_and_save(tally, budget)
                if reason := rules.patience_used(self):
                    control.stop(reason, 0)
                if budget and tconf.sample_interval:  # a sample with every evaluation
                    self._live_sample_in(budget, tally)
            if (not budget and tconf.sample_interval
                    and self.step % tconf.sample_interval == 0):
                self.live_sample()
        return self._finish(tally, budget)

    def _announce(self) -> None:
        tconf = self.tconf
        self.bus.publish(TrainingStarted(
            step=self.step, max_iters=None if self.clock_decides else tconf.max_iters,
            device=str(self.device), parameters=self.model.num_parameters(),
            data=self.setup.data_name, out_dir=str(self.out_dir),
            config={"model": self.mconf.to_dict(), "train": asdict(tconf),
                    "preset": self.setup.preset,
                    **({"rung": self.setup.rung} if self.setup.rung else {})},
        ))
        for message in self.setup.notices:
            self.bus.publish(Notice(message))

    @property
    def clock_decides(self) -> bool:
        """A time budget ends the run, not a step count (its max_iters is a placeholder)."""
        return bool(self.tconf.time_budget) and self.tconf.max_iters >= UNBOUNDED_STEPS

    def _pick_threads(self, tally: RunTally) -> None:
        """On a CPU, train on the thread count that is fastest now (unless --threads fixed it):
        on a busy machine one thread can beat all of them many times over. Busy by the load
        average (more runnable jobs than cores): one thread, without timing the others (one
        thrashing probe step took 30 s here); else by timing each count."""
        candidates = thread_candidates()
        if (self.device.type != "cpu" or self.dist is not None or threads_given()
                or not self.pick_threads or len(candidates) < 2):
            return
        before = torch.get_num_threads()
        load, cores = machine_load()
        if load >= cores:
            torch.set_num_threads(1)
            message = (f"busy machine (load average {load:.1f} on {cores} cores): training on "
                       "1 thread (--threads overrides)")
        else:
            choice = pick_threads(self.probe_step, candidates)
            message = choice.message()
        tally.threads_picked(self.clock(), by_load=load >= cores)
        if tally.steps == 0 or torch.get_num_threads() != before:  # at the start, then changes
            self.bus.publish(Notice(message, level="info"))

    def probe_step(self) -> None:
        """A forward and backward pass like a training step's, that changes nothing: no
        optimizer step, the gradients dropped, the random streams put back."""
        rng = torch.get_rng_state()
        x, y = get_batch(self.data.train, self.mconf.block_size, self.tconf.batch_size,
                         torch.Generator().manual_seed(self.tconf.seed))
        with autocast_context(self.device, self.tconf.precision):
            _, loss = self.model(x.to(self.device), y.to(self.device))
        loss.backward()
        self.optimizer.zero_grad(set_to_none=True)
        torch.set_rng_state(rng)

    def _first_evaluation(self, tally: RunTally) -> TimeBudget | None:
        """Evaluate the untrained model (a fresh run), and start the time budget's clock with a
        reserve sized from that evaluation. Under a budget the evaluation is sized first, from
        one timed batch, so that all evaluations fit in a tenth of the budget."""
        tconf, clock = self.tconf, self.clock
        budget = (TimeBudget(tconf.time_budget, self.setup.started, clock) if tconf.time_budget
                  else None)
        if self.step == 0 and self.step < tconf.max_iters:
            if budget and self.is_main:
                self.eval_iters = budget.eval_iters(self.time_one_eval_batch(), tconf.eval_iters)
            seconds = self._timed_in(budget, partial(self._with_compile_fallback, self.evaluate))
            tally.evaluated_at = 0
            if budget:
                budget.start_training(seconds)
        elif budget:  # resuming: no evaluation timed yet, so the reserve covers the save only
            budget.start_training(0.0)
        return budget

    def _timed_in(self, budget: TimeBudget | None, work: Callable[[], Any]) -> float:
        """Run ``work`` (an evaluation, a live sample); its seconds, without any time it let a
        prompt run (which a budget gives back)."""
        started = self.clock()
        work()
        parked = self.control.take_parked_in_work()
        if budget:
            budget.give_back(parked)
        return self.clock() - started - parked

    def _evaluation_due(self, budget: TimeBudget | None) -> bool:
        """Every ``eval_interval`` steps; under a time budget by the clock instead (one process:
        under torchrun the ranks' clocks would not agree on the step)."""
        if self.step == self.tconf.max_iters:
            return True
        if budget and self.dist is None:
            return budget.evaluation_due()
        return self.step % self.tconf.eval_interval == 0

    def _live_sample_in(self, budget: TimeBudget, tally: RunTally) -> None:
        """A live sample under a time budget: the end's reserve grows to fit one."""
        deadline = self.clock() + budget.SAMPLE_SHARE * budget.seconds
        tally.sample_seconds = self._timed_in(budget, partial(self.live_sample, deadline=deadline))
        tally.sampled_at = self.step
        budget.plan_the_end(tally.eval_seconds + tally.sample_seconds, tally.step_time_ema or 0.0)

    def _wait_until_runnable(self, budget: TimeBudget | None, tally: RunTally) -> bool:
        """Park while paused or held; False when the loop should look at its requests again."""
        waited = self.clock()
        runnable = self.control.wait_until_runnable(
            lambda state: self.bus.publish(StateChanged(state)))
        # paused or holding for a prompt (here or inside an evaluation or a live sample): not
        # the run's time
        parked = self.clock() - waited + self.control.take_parked_in_work()
        tally.paused += parked
        if budget:
            budget.give_back(parked)
        return runnable

    def _timed_step(self, progress: float | None, tally: RunTally) -> float:
        """One optimizer step, timed into the tally (the first one may fall back from
        torch.compile)."""
        started, parked = time.perf_counter(), self.control.parked_in_work
        loss: float = (self._with_compile_fallback(partial(self.train_step, progress))
                       if tally.trained_tokens == 0 else self.train_step(progress))
        if math.isfinite(loss):  # a prompt let in between two blocks is not the step's time
            tally.add_step(time.perf_counter() - started
                           - (self.control.parked_in_work - parked), loss)
        return loss

    def _report_step(self, loss: float, progress: float | None, budget: TimeBudget | None,
                     tally: RunTally) -> None:
        step_time = tally.step_time_ema or 0.0
        max_iters, eta = self.tconf.max_iters, (self.tconf.max_iters - self.step) * step_time
        total: int | None = max_iters
        if budget:
            eta = budget.end - self.clock()  # the command's end, as the budget clock shows it
            if self.clock_decides:  # the step count the clock will allow, at this pace
                resumed_at = self.step - tally.steps
                total = (None if tally.steps < PACE_STEPS or not progress
                         else min(max_iters, resumed_at + round(tally.steps / progress)))
        self.bus.publish(StepDone(
            step=self.step, max_iters=total, loss=loss,
            lr=self.optimizer.param_groups[0]["lr"],  # AdamW's groups come first
            tokens_per_second=tally.tokens_per_step / step_time if step_time else 0.0,
            elapsed=self.clock() - tally.started - tally.paused, eta=max(0.0, eta),
            budget_used=budget.used() if budget else None,
            budget_seconds=budget.seconds if budget else None,
        ))

    def _evaluate_and_save(self, tally: RunTally, budget: TimeBudget | None) -> None:
        if budget and self.is_main and tally.eval_seconds:  # size it from the last one's pace
            batch_seconds = tally.eval_seconds / (2 * self.eval_iters)
            self.eval_iters = budget.eval_iters(batch_seconds, self.tconf.eval_iters)
        tally.eval_seconds = self._timed_in(budget, self.evaluate)
        if budget:
            budget.evaluated()
            budget.plan_the_end(tally.eval_seconds + tally.sample_seconds,
                                tally.step_time_ema or 0.0)
        tally.evaluated_at = self.step
        self.save("eval" if self.step < self.tconf.max_iters else "final")
        tally.saved_at = self.step

    def _finish(self, tally: RunTally, budget: TimeBudget | None) -> TrainResult:
        """Measure and save the end (unless a loss went bad), put the best weights back in the
        model, and say how the run ended."""
        state, reason, control = tally.state, tally.reason, self.control
        if state == "finished" and tally.evaluated_at != self.step and self.step > 0:
            self.evaluate()  # a time-budgeted run ends between evaluations: measure the end
        if (state == "finished" and budget and self.tconf.sample_interval
                and tally.sampled_at != self.step and self.step > 0):
            self.live_sample(stoppable=False, deadline=budget.end - 1.0)  # what it writes now
        if budget and state == "finished" and tally.steps < FEW_STEPS and self.is_main:
            self.bus.publish(Notice(few_steps_hint(tally, budget)))
        if state != "failed" and tally.saved_at != self.step:
            self.save("stop" if state == "stopped" else "final")
        if state == "finished" and control.stopping:
            reason = control.stop_reason
        if state != "failed" and self.is_main and self.restore_best():
            self.bus.publish(Notice(f"the model now holds its best weights: val "
                                    f"{self.best_val_loss:.4f} from step {self.best_step} "
                                    f"(the last step, {self.step}, stays in {CHECKPOINT_NAME})",
                                    level="info"))
        self.bus.publish(StateChanged(state, reason))
        return TrainResult(
            state=state, step=self.step,
            train_loss=self.last_eval["train"] if self.last_eval else tally.last_loss,
            val_loss=self.last_eval["val"] if self.last_eval else None,
            best_val_loss=self.best_val_loss,
            tokens_per_second=(tally.trained_tokens / tally.train_time if tally.train_time
                               else 0.0),
            checkpoint=str(self.checkpoint_path) if self.checkpoint_path.exists() else None,
            device=str(self.device), parameters=self.model.num_parameters(),
            elapsed=tally.train_time, reason=reason,
            exit_code=control.exit_code if state == "stopped" else (1 if state == "failed" else 0),
            best_step=self.best_step,
        )
