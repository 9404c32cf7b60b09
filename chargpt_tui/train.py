"""Training: the loop, its schedule, evaluation, checkpoints, and control from other threads.

:class:`Trainer` runs on whatever thread calls :meth:`Trainer.run` (the CLI's main thread, or a
Textual worker) and publishes :mod:`~chargpt_tui.events` on a bus. Other threads steer it
through :class:`TrainerControl`: pause, resume, save now, stop. Every request is honoured at a
step boundary, so checkpoints always hold a consistent model/optimizer pair.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch

from chargpt_tui import distributed, history
from chargpt_tui.checkpoint import (
    BEST_NAME,
    CHECKPOINT_NAME,
    FORMAT_VERSION,
    clean_stale_temp_files,
    load_checkpoint,
    resolve_checkpoint,
    save_checkpoint,
)
from chargpt_tui.data import TokenizedData, get_batch, load_dataset, split_data
from chargpt_tui.errors import CheckpointError, ConfigError, DataError, UserError
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
from chargpt_tui.model import GPTConfig, GPTLanguageModel, fused_copy, iter_decay_groups
from chargpt_tui.presets import PRESETS, resolve_preset
from chargpt_tui.runs import METRICS_NAME
from chargpt_tui.sampling import SamplingParams, stream_tokens
from chargpt_tui.tokenizer import CharTokenizer, UnknownCharacterError


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

    @property
    def final_lr(self) -> float:
        return self.learning_rate / 10 if self.min_lr is None else self.min_lr

    @property
    def decay_iters(self) -> int:
        return self.lr_decay_iters or self.max_iters


def get_lr(step: int, config: TrainConfig) -> float:
    """Linear warmup, then cosine decay to ``final_lr`` at ``decay_iters``, then flat.

    Warmup avoids huge early updates while Adam's moment estimates are still noise.
    """
    if step < config.warmup_iters:
        return config.learning_rate * (step + 1) / (config.warmup_iters + 1)
    if step >= config.decay_iters:
        return config.final_lr
    progress = (step - config.warmup_iters) / max(1, config.decay_iters - config.warmup_iters)
    coeff = 0.5 * (1.0 + math.cos(math.pi * progress))  # 1 → 0
    return config.final_lr + coeff * (config.learning_rate - config.final_lr)


def pick_device(requested: str = "auto") -> torch.device:
    """``auto``: CUDA, then Apple's MPS, then CPU. An explicit device must exist."""
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(requested)
    except RuntimeError:
        raise ConfigError(f"unknown device {requested!r}", "use auto, cpu, cuda or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but CUDA is not available here",
                          "use --device cpu (or auto)")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ConfigError(f"--device {requested}: this machine has {torch.cuda.device_count()} "
                          "CUDA device(s)", "use --device cuda:0 (or auto)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("--device mps was asked for but MPS is not available here",
                          "use --device cpu (or auto)")
    return device


def set_torch_threads(threads: int | None) -> None:
    """``--threads``: torch's CPU threads for this process (None keeps torch's default)."""
    if threads is None:
        return
    if threads < 1:
        raise ConfigError("--threads must be at least 1")
    torch.set_num_threads(threads)


def autocast_context(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA (same range as fp32, no loss scaling needed); fp32 elsewhere."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def use_tf32_matmuls() -> None:
    """On CUDA, let float32 matmuls and convolutions use TF32 tensor cores (Ampere and newer):
    several times the fp32 speed at a 10-bit mantissa, which training does not notice. It
    speeds up what bf16 autocast leaves in fp32, and sampling, whose snapshot runs in fp32."""
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True


def configure_optimizer(model: GPTLanguageModel, config: TrainConfig,
                        device: torch.device) -> torch.optim.AdamW:
    """AdamW with weight decay on weight matrices only (see :func:`iter_decay_groups`)."""
    params = dict(model.named_parameters())
    decay, no_decay = [], []
    for name, wants_decay in iter_decay_groups(model):
        (decay if wants_decay else no_decay).append(params[name])
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    extra = {"fused": True} if device.type == "cuda" else {}
    return torch.optim.AdamW(groups, lr=config.learning_rate,
                             betas=(config.beta1, config.beta2), **extra)


@torch.no_grad()
def estimate_loss(model: torch.nn.Module, data: TokenizedData, block_size: int, batch_size: int,
                  eval_iters: int, device: torch.device, seed: int) -> dict[str, float]:
    """Mean loss over ``eval_iters`` random batches of each split, in eval mode (no dropout).

    Uses its own generator with a fixed seed: every evaluation sees the same batches (so curves
    compare like with like) and evaluating never shifts the training batches.
    """
    was_training = model.training
    model.eval()
    out = {}
    for split in ("train", "val"):
        generator = torch.Generator().manual_seed(seed)
        losses = torch.zeros(eval_iters)
        for k in range(eval_iters):
            x, y = get_batch(getattr(data, split), block_size, batch_size, generator)
            with autocast_context(device):
                _, loss = model(x.to(device), y.to(device))
            losses[k] = loss.item()
        out[split] = losses.mean().item()
    model.train(was_training)
    return out


class TrainerControl:
    """Thread-safe steering of a running :class:`Trainer`; every call returns at once.

    Two kinds of pause: the user's (``pause``/``resume``, shown as "paused") and short *holds*
    that other work takes (``with control.hold(): ...``) — e.g. the TUI answering a prompt, so
    the two computations don't fight over the CPU cores. Training runs only when neither applies.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running = threading.Event()  # set ⇔ the loop may take steps
        self._running.set()
        self._parked = threading.Event()  # set ⇔ the loop is not inside a step
        self._parked.set()
        self._stop = threading.Event()
        self._save = threading.Event()
        self._user_paused = False
        self._holds = 0
        self.stop_reason = ""
        self.exit_code = 0

    def _update(self) -> None:
        with self._lock:
            if self._stop.is_set() or (not self._user_paused and self._holds == 0):
                self._running.set()
            else:
                self._running.clear()

    def pause(self) -> None:
        self._user_paused = True
        self._update()

    def resume(self) -> None:
        self._user_paused = False
        self._update()

    def toggle_pause(self) -> bool:
        """Pause if running, resume if paused; returns True when now paused."""
        if self._user_paused:
            self.resume()
        else:
            self.pause()
        return self._user_paused

    @property
    def paused(self) -> bool:
        return self._user_paused

    @contextlib.contextmanager
    def hold(self, wait: float = 0.0) -> Iterator[None]:
        """Keep training parked while the block runs; waits up to ``wait`` s for the current
        step to finish first. Holds nest and never show up as a user pause."""
        with self._lock:
            self._holds += 1
        self._update()
        try:
            if wait:
                self._parked.wait(wait)
            yield
        finally:
            with self._lock:
                self._holds -= 1
            self._update()

    def request_save(self) -> None:
        self._save.set()
        self._running.set()  # wake a paused loop so it saves now; it parks again after

    # -- the training loop's side (called from the training thread only) ------------------------

    def take_save_request(self) -> bool:
        """True once per :meth:`request_save`."""
        requested = self._save.is_set()
        if requested:
            self._save.clear()
        return requested

    def rearm(self) -> None:
        """After a save that woke a paused or held loop: make it park again."""
        self._update()

    def wait_until_runnable(self, on_state: Callable[[str], None]) -> bool:
        """At a step boundary: park while paused or held, without busy-waiting.

        Returns False when the loop should re-check stop/save requests before stepping.
        ``on_state`` hears "paused"/"training" around a user pause (holds stay silent).
        """
        if not self._running.is_set():
            user_pause = self.paused
            if user_pause:
                on_state("paused")
            self._parked.set()
            self._running.wait()
            if self.stopping or self._save.is_set():
                return False
            if user_pause:
                on_state("training")
        self._parked.clear()
        # A hold may have begun while we woke up. Checked only after clearing _parked, so a hold
        # either sees this and parks us first or waits for the step: never both at once.
        return self._running.is_set()

    def mark_idle(self) -> None:
        """The loop has ended: holds need not wait for a step boundary any more."""
        self._parked.set()

    def stop(self, reason: str = "stopped", exit_code: int = 0) -> None:
        """Finish at the next step boundary (saving a checkpoint). Safe from signal handlers:
        it only sets events, it takes no lock."""
        if not self._stop.is_set():
            self.stop_reason, self.exit_code = reason, exit_code
        self._stop.set()
        self._running.set()  # wake a paused loop so it can stop

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()


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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RunSetup:
    """What the CLI/TUI resolved from options, before training starts."""

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


MODEL_KEYS = {f.name for f in fields(GPTConfig)}
TRAIN_KEYS = {f.name for f in fields(TrainConfig)}


def default_out_dir(runs_root: Path = Path("runs")) -> Path:
    """A fresh run folder named by the start time: runs/20261125-221100."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = runs_root / stamp
    suffix = 1
    while out.exists():
        suffix += 1
        out = runs_root / f"{stamp}-{suffix}"
    return out


def prepare_run(
    *,
    data: str | None = None,
    preset: str = "auto",
    overrides: dict[str, Any] | None = None,
    out: str | Path | None = None,
    resume: str | Path | None = None,
    device: str = "auto",
    encoding: str = "utf-8",
    progress: Callable[[int, int | None], None] | None = None,
    notice: Callable[[str], None] | None = None,
) -> RunSetup:
    """Resolve options (preset < checkpoint < explicit overrides) and load the data.

    ``overrides`` holds only options the user actually gave (None values are ignored). When
    resuming, the model shape comes from the checkpoint and may not be changed.
    """
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    unknown = set(given) - MODEL_KEYS - TRAIN_KEYS
    if unknown:
        raise ConfigError(f"unknown training options: {', '.join(sorted(unknown))}")
    torch_device = pick_device(device)
    notices: list[str] = []

    def tell(message: str) -> None:
        # Shown once: at once through the callback, or else by the Trainer when it starts.
        if notice:
            notice(message)
        else:
            notices.append(message)

    checkpoint = None
    if resume is not None:
        checkpoint = load_checkpoint(resume)
        changed = [k for k in given if k in MODEL_KEYS and k != "dropout"
                   and given[k] != checkpoint["model_config"].get(k)]
        if changed:
            raise ConfigError(f"cannot change {', '.join(changed)} when resuming",
                              "drop those options, or start a new run without --resume")
        preset_name = checkpoint.get("preset", "custom")
        base = {**checkpoint["model_config"], **checkpoint.get("train_config", {})}
        data_spec = data or checkpoint.get("data", "shakespeare")
    else:
        preset_name = resolve_preset(preset, torch_device.type)
        if preset_name not in PRESETS:
            raise ConfigError(f"unknown preset {preset!r}",
                              f"choose one of: auto, {', '.join(PRESETS)}")
        base = dict(PRESETS[preset_name])
        data_spec = data or "shakespeare"
    settings = {**base, **given}
    # Check every option before any download or data loading: a typo should cost nothing.
    # (The real vocabulary size is only known once the text is loaded.)
    model_config = GPTConfig(**{"vocab_size": 1, **{k: v for k, v in settings.items()
                                                    if k in MODEL_KEYS}})
    train_config = TrainConfig(**{k: v for k, v in settings.items() if k in TRAIN_KEYS})
    out_dir = resolve_out_dir(out, resume)
    refuse_to_overwrite(out_dir, resume)

    corpus = load_dataset(data_spec, encoding=encoding, progress=progress, notice=tell)
    if checkpoint is not None:
        tokenizer = CharTokenizer(checkpoint["vocab"])
        unknown_chars = tokenizer.unknown_chars(corpus.text)
        if unknown_chars:
            raise DataError(
                f"{corpus.name} has characters the checkpoint's vocabulary lacks: "
                f"{UnknownCharacterError(unknown_chars).unknown[:20]!r}",
                "resume on the same data the run started with",
            )
        if corpus.name != checkpoint.get("data", corpus.name):
            tell(f"resuming on {corpus.name}, but this run started on {checkpoint['data']}")
    else:
        tokenizer = CharTokenizer.from_text(corpus.text)
    model_config = replace(model_config, vocab_size=tokenizer.vocab_size)
    split = split_data(corpus.text, tokenizer, model_config.block_size)
    return RunSetup(model_config, train_config, tokenizer, split, corpus.name, torch_device,
                    out_dir, preset_name, checkpoint, notices)


def resolve_out_dir(out: str | Path | None, resume: str | Path | None) -> Path:
    """``--out``, else the folder of the checkpoint being resumed, else a fresh runs/<time>."""
    if out is not None:
        return Path(out).expanduser()
    if resume is not None:
        resumed = Path(resume).expanduser().resolve()
        return resumed if resumed.is_dir() else resumed.parent
    return default_out_dir()


def refuse_to_overwrite(out_dir: Path, resume: str | Path | None) -> None:
    """A new run must not replace a checkpoint someone already paid for in training time."""
    existing = out_dir / CHECKPOINT_NAME
    try:
        if not existing.exists():
            return
    except OSError:
        return  # a folder we may not look into: creating the run there reports it clearly
    if resume is not None and existing.resolve() == resolve_checkpoint(resume).resolve():
        return
    raise ConfigError(f"{out_dir} already holds a checkpoint that this run would overwrite",
                      f"continue it with --resume {out_dir}, or pick another --out")


def point_latest_at(out_dir: Path) -> None:
    """Keep ``<runs root>/latest`` a symlink to the newest run (best effort: not on all OSes)."""
    latest = out_dir.parent / "latest"
    if out_dir.name == "latest" or (latest.exists() and not latest.is_symlink()):
        return
    tmp = out_dir.parent / f".latest.{os.getpid()}.tmp"
    try:
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(out_dir.name, target_is_directory=True)
        os.replace(tmp, latest)
    except OSError:
        tmp.unlink(missing_ok=True)


class MetricsWriter:
    """Appends every event of a run as one JSON line to ``metrics.jsonl`` beside the checkpoint.

    Flushed at most once a second (and on evals and checkpoints), so it costs training nothing.
    Live samples arrive a character at a time; each is written once, whole, when it ends. The
    file is enough to replay a run's panels (see :mod:`chargpt_tui.runs`).
    """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = path.open("a", encoding="utf-8")
        self._last_flush = 0.0
        self.failed = False
        self._sample: list[str] = []

    def __call__(self, event: Any) -> None:
        if self.failed:
            return
        if isinstance(event, SampleChunk):
            self._sample.append(event.text)
            if not event.final:
                return
            event = SampleChunk(event.step, "".join(self._sample), final=True)
            self._sample = []
        record = {"event": type(event).__name__, "time": time.time(), **asdict(event)}
        try:
            self._file.write(json.dumps(record) + "\n")
            now = time.monotonic()
            if now - self._last_flush > 1.0 or not isinstance(event, StepDone):
                self._file.flush()
                self._last_flush = now
        except OSError:
            # A log that cannot be written (full disk) must not crash the run it describes;
            # the next checkpoint save reports the disk problem if it persists.
            self.failed = True

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._file.close()


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
        self.model = GPTLanguageModel(self.mconf).to(self.device)
        self.optimizer = configure_optimizer(self.model, self.tconf, self.device)
        # each rank its own batches and dropout masks; rank 0 matches a single process exactly
        self.data_generator = torch.Generator().manual_seed(self.tconf.seed + rank)
        if rank:
            torch.manual_seed(self.tconf.seed + rank)
        self.step = 0
        self.best_val_loss: float | None = None
        self.last_eval: dict[str, float] | None = None
        if setup.resume is not None:
            self._restore(setup.resume)
        self.train_model: torch.nn.Module = self.model
        if self.tconf.compile:
            self.train_model = torch.compile(self.model)
        if self.dist:
            self.train_model = distributed.wrap_model(self.dist, self.train_model)
        self._weights_lock = threading.Lock()  # held while weights change (for snapshots)

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
            "last_eval": self.last_eval,
            "torch_version": str(torch.__version__),
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
                               self.tconf.eval_iters, self.device, self.tconf.seed)
        self.last_eval = losses
        if self.best_val_loss is None or losses["val"] < self.best_val_loss:
            self.best_val_loss = losses["val"]
            self.save_best()
        if problem := history.record(self.out_dir, self.weights_payload(), self.tconf.history_keep):
            self.bus.publish(Notice(problem))
        self.bus.publish(EvalDone(self.step, losses["train"], losses["val"], self.best_val_loss))
        return losses

    def live_sample(self) -> None:
        """Stream a short sample from the current weights (seeded by the step: reproducible)."""
        if not self.is_main:
            return
        model, step = self.snapshot()
        start = [self.setup.tokenizer.stoi.get("\n", 0)]
        params = SamplingParams(max_new_tokens=self.tconf.sample_chars, temperature=0.8,
                                top_k=None, seed=step)
        for token in stream_tokens(model, start, params):
            self.bus.publish(SampleChunk(step, self.setup.tokenizer.vocab[token]))
            if self.control.stopping:
                break
        self.bus.publish(SampleChunk(step, "", final=True))

    def _batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = get_batch(self.data.train, self.mconf.block_size, self.tconf.batch_size,
                         self.data_generator)
        if self.device.type == "cuda":  # pinned memory lets the copy overlap with compute
            return (x.pin_memory().to(self.device, non_blocking=True),
                    y.pin_memory().to(self.device, non_blocking=True))
        return x.to(self.device), y.to(self.device)

    def train_step(self) -> float:
        """One optimizer step (with gradient accumulation); returns the mean loss."""
        lr = get_lr(self.step, self.tconf)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        total = 0.0
        last = self.tconf.grad_accum_steps - 1
        for micro_step in range(self.tconf.grad_accum_steps):
            x, y = self._batch()
            with distributed.gradient_sync(self.train_model, micro_step == last):
                with autocast_context(self.device):
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
                    "preset": self.setup.preset},
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
        saved_at = -1
        if self.step == 0 and self.step < tconf.max_iters:
            self._with_compile_fallback(self.evaluate)
        self.bus.publish(StateChanged("training"))
        while self.step < tconf.max_iters:
            stop_requested, save_requested = self._requests()
            if stop_requested:
                state, reason = "stopped", control.stop_reason
                break
            if save_requested:
                self.save("requested")
                saved_at = self.step
                control.rearm()  # back to paused/held if the save request woke the loop
            if not control.wait_until_runnable(lambda state: self.bus.publish(StateChanged(state))):
                continue
            started = time.perf_counter()
            loss = (self._with_compile_fallback(self.train_step) if trained_tokens == 0
                    else self.train_step())
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
            self.bus.publish(StepDone(
                step=self.step, max_iters=tconf.max_iters, loss=loss,
                lr=self.optimizer.param_groups[0]["lr"],
                tokens_per_second=tokens_per_step / step_time_ema, elapsed=train_time,
                eta=(tconf.max_iters - self.step) * step_time_ema,
            ))
            if self.step % tconf.eval_interval == 0 or self.step == tconf.max_iters:
                self.evaluate()
                self.save("eval" if self.step < tconf.max_iters else "final")
                saved_at = self.step
            if tconf.sample_interval and self.step % tconf.sample_interval == 0:
                self.live_sample()
        if state != "failed" and saved_at != self.step:
            self.save("stop" if state == "stopped" else "final")
        if state == "finished" and control.stopping:
            reason = control.stop_reason
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
            (1 if state == "failed" else 0),
        )


def model_from_checkpoint(payload: dict[str, Any], device: torch.device | str = "cpu"
                          ) -> tuple[GPTLanguageModel, CharTokenizer]:
    """A fused, eval-mode model and its tokenizer from a loaded checkpoint, ready to sample."""
    try:
        config = GPTConfig(**payload["model_config"])
        tokenizer = CharTokenizer(payload["vocab"])
        if tokenizer.vocab_size != config.vocab_size:
            raise CheckpointError(f"vocabulary of {tokenizer.vocab_size} characters does not "
                                  f"match the model's {config.vocab_size}")
        model = GPTLanguageModel(config)
        model.load_state_dict(payload["model"])
    except (TypeError, RuntimeError, KeyError) as error:
        first = str(error).strip().splitlines()[0][:160]
        raise CheckpointError(f"checkpoint does not describe a valid model: {first}") from None
    return fused_copy(model.to(device)), tokenizer
