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
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch

from chargpt_tui import distributed, history
from chargpt_tui.checkpoint import FORMAT_VERSION, clean_stale_temp_files, save_checkpoint
from chargpt_tui.control import TrainerControl
from chargpt_tui.data import TokenizedData, get_batch
from chargpt_tui.device import autocast_context, use_tf32_matmuls
from chargpt_tui.durations import format_duration
from chargpt_tui.errors import CheckpointError, ConfigError, UserError
from chargpt_tui.events import (
    CheckpointSaved,
    EvalDone,
    EventBus,
    Notice,
    SampleChunk,
    StateChanged,
    StepDone,
    TrainingStarted,
)
from chargpt_tui.lecture import build_model
from chargpt_tui.model import GPTLanguageModel, fused_copy, iter_decay_groups
from chargpt_tui.optim import Muon, MuonWithAdamW
from chargpt_tui.runs import (
    BEST_NAME,
    CHECKPOINT_NAME,
    METRICS_NAME,
    MetricsWriter,
    point_latest_at,
)
from chargpt_tui.sampling import SamplingParams, stream_tokens

if TYPE_CHECKING:  # run_setup builds the RunSetup from options and sits above this module
    from chargpt_tui.run_setup import RunSetup


OPTIMIZERS = ("adamw", "muon")
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
    """
    if step < config.warmup_iters:
        return config.learning_rate * (step + 1) / (config.warmup_iters + 1)
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
    extra = {"fused": True} if device.type == "cuda" else {}
    adamw = torch.optim.AdamW(groups, lr=config.learning_rate,
                              betas=(config.beta1, config.beta2), **extra)
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
    are inside it; time spent paused (or holding for a prompt) is given back; the last evaluation
    and save get a reserve sized from the first evaluation, so the command ends on time.
    """

    def __init__(self, seconds: float, started: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.end = started + seconds
        self.training_from = clock()
        self.reserve = 0.0
        self.paused = 0.0

    def start_training(self, evaluation_seconds: float) -> None:
        self.training_from = self.clock()
        self.reserve = 1.5 * evaluation_seconds + 0.5  # the final evaluation, save and exit

    def give_back(self, seconds: float) -> None:
        self.paused += seconds

    def usable(self) -> float:
        return self.end - self.reserve - self.training_from

    def progress(self) -> float:
        used = self.clock() - self.training_from - self.paused
        return 1.0 if self.usable() <= 0 else min(1.0, used / self.usable())


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


class Trainer:
    """Owns model, optimizer, data RNG and step counter; :meth:`run` trains to ``max_iters``."""

    def __init__(self, setup: RunSetup, bus: EventBus | None = None) -> None:
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
        if setup.resume is not None:
            self._restore(setup.resume)
        self.train_model: torch.nn.Module = self.model
        if self.tconf.compile:
            self.train_model = cast(torch.nn.Module, torch.compile(self.model))
        if self.dist:
            self.train_model = distributed.wrap_model(self.dist, self.train_model)
        self._weights_lock = threading.Lock()  # held while weights change (for snapshots)
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
        # the unwrapped module: a forward through DDP on rank 0 alone would wait for the others
        losses = estimate_loss(distributed.unwrap(self.train_model), self.data,
                               self.mconf.block_size, self.tconf.batch_size,
                               self.tconf.eval_iters, self.device, self.tconf.seed,
                               self.tconf.precision, between_batches=self.control.let_holds_run)
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
        return losses

    def restore_best(self) -> bool:
        """Put the best-validation weights back into the model (after the run): what the user
        samples from is then never worse than the best the run saw. False if already there."""
        if self._best_weights is None or self.best_step == self.step:
            return False
        with self._weights_lock:
            self.model.load_state_dict(self._best_weights)
        return True

    def live_sample(self) -> None:
        """Stream a short sample from the current weights (seeded by the step: reproducible)."""
        if not self.is_main:
            return
        model, step = self.snapshot()
        start = [self.setup.tokenizer.stoi.get("\n", 0)]
        params = SamplingParams(max_new_tokens=self.tconf.sample_chars, temperature=0.8,
                                top_k=None, seed=step)
        try:
            for token in stream_tokens(model, start, params):
                self.bus.publish(SampleChunk(step, self.setup.tokenizer.vocab[token]))
                if self.control.stopping:
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
        last = self.tconf.grad_accum_steps - 1
        for micro_step in range(self.tconf.grad_accum_steps):
            x, y = self._batch()
            with distributed.gradient_sync(self.train_model, micro_step == last):
                with autocast_context(self.device, self.tconf.precision):
                    _, loss = self.train_model(x, y)
                (loss / self.tconf.grad_accum_steps).backward()
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
        try:
            return self._run()
        finally:
            self.control.mark_idle()
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
        self.bus.publish(TrainingStarted(
            step=self.step, max_iters=tconf.max_iters, device=str(self.device),
            parameters=self.model.num_parameters(), data=self.setup.data_name,
            out_dir=str(self.out_dir),
            config={"model": self.mconf.to_dict(), "train": asdict(tconf),
                    "preset": self.setup.preset,
                    **({"rung": self.setup.rung} if self.setup.rung else {})},
        ))
        for message in self.setup.notices:
            self.bus.publish(Notice(message))
        self.model.train()
        state, reason = "finished", ""
        tokens_per_step = (tconf.batch_size * self.mconf.block_size * tconf.grad_accum_steps
                           * (self.dist.world_size if self.dist else 1))
        train_time, trained_tokens = 0.0, 0
        step_time_ema: float | None = None
        last_loss: float | None = None
        saved_at = evaluated_at = -1
        clock = self.clock
        control.clock = clock  # parked time and the budget on one clock
        budget = (TimeBudget(tconf.time_budget, self.setup.started, clock) if tconf.time_budget
                  else None)
        if self.step == 0 and self.step < tconf.max_iters:
            eval_started = clock()
            self._with_compile_fallback(self.evaluate)
            evaluated_at = 0
            if budget:  # a prompt let in between its batches is not the run's time
                parked = control.take_parked_in_work()
                budget.start_training(clock() - eval_started - parked)
                budget.give_back(parked)
        elif budget:  # resuming: no evaluation timed yet, so the reserve covers the save only
            budget.start_training(0.0)
        self.bus.publish(StateChanged("training"))
        finishing = False  # the run itself decided to end (time budget, patience)
        while self.step < tconf.max_iters:
            stop_requested, save_requested = self._requests()
            if stop_requested:
                state = "finished" if finishing and control.exit_code == 0 else "stopped"
                reason = control.stop_reason
                break
            if save_requested:
                self.save("requested")
                saved_at = self.step
                control.rearm()  # back to paused/held if the save request woke the loop
            waited = clock()
            runnable = control.wait_until_runnable(
                lambda state: self.bus.publish(StateChanged(state)))
            if budget:  # paused or holding for a prompt (here or inside an evaluation or a
                # live sample): not the run's time
                budget.give_back(clock() - waited + control.take_parked_in_work())
            if not runnable:
                continue
            progress = budget.progress() if budget else None
            if progress is not None and progress >= 1.0:
                finishing = True  # stops every process at the same step, via _requests
                control.stop(f"time budget of {format_duration(tconf.time_budget or 0)} used", 0)
                continue
            started = time.perf_counter()
            loss = (self._with_compile_fallback(partial(self.train_step, progress))
                    if trained_tokens == 0 else self.train_step(progress))
            if not math.isfinite(loss):
                state = "failed"
                kept = ("kept the last good checkpoint" if self.checkpoint_path.exists()
                        else "no checkpoint had been saved yet")
                reason = (f"loss became {loss} at step {self.step + 1}; stopped and {kept} — "
                          "try a lower --learning-rate")
                self.bus.publish(Notice(reason, level="error"))
                break
            elapsed_step = time.perf_counter() - started
            train_time += elapsed_step
            trained_tokens += tokens_per_step
            step_time_ema = (elapsed_step if step_time_ema is None
                             else 0.9 * step_time_ema + 0.1 * elapsed_step)
            last_loss = loss
            max_iters, eta = tconf.max_iters, (tconf.max_iters - self.step) * step_time_ema
            if budget and progress:  # the step count the clock will allow, at this pace
                max_iters = max(self.step, round(self.step / progress))
                eta = (1.0 - progress) * budget.usable()
            self.bus.publish(StepDone(
                step=self.step, max_iters=max_iters, loss=loss,
                lr=self.optimizer.param_groups[0]["lr"],  # AdamW's groups come first
                tokens_per_second=tokens_per_step / step_time_ema, elapsed=train_time, eta=eta,
            ))
            if self.step % tconf.eval_interval == 0 or self.step == tconf.max_iters:
                self.evaluate()
                evaluated_at = self.step
                self.save("eval" if self.step < tconf.max_iters else "final")
                saved_at = self.step
                if tconf.patience and self.evals_since_best >= tconf.patience:
                    finishing = True
                    control.stop(f"early stop: val has not improved for {tconf.patience} "
                                 f"evaluations (best {self.best_val_loss:.4f} at step "
                                 f"{self.best_step})", 0)
            if tconf.sample_interval and self.step % tconf.sample_interval == 0:
                self.live_sample()
        if state == "finished" and evaluated_at != self.step and self.step > 0:
            self.evaluate()  # a time-budgeted run ends between evaluations: measure the end
        if state != "failed" and saved_at != self.step:
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
            train_loss=self.last_eval["train"] if self.last_eval else last_loss,
            val_loss=self.last_eval["val"] if self.last_eval else None,
            best_val_loss=self.best_val_loss,
            tokens_per_second=trained_tokens / train_time if train_time else 0.0,
            checkpoint=str(self.checkpoint_path) if self.checkpoint_path.exists() else None,
            device=str(self.device), parameters=self.model.num_parameters(), elapsed=train_time,
            reason=reason, exit_code=control.exit_code if state == "stopped" else
            (1 if state == "failed" else 0), best_step=self.best_step,
        )
